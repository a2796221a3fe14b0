"""``Idempotency-Key``: a submission runs at most once per caller and key, and a repeat
gets the first one's result.

What is stored is the value, the :class:`~mailproxy.domain.model.SubmitResult` as JSON,
with ``RESULT_RECORD`` in the record's ``status`` column to say so; the HTTP layer
renders it like a fresh result. Records written before the value was stored hold the
HTTP answer instead: an HTTP status (200 or 400) and the JSON of the add-messages answer,
whose ``queued`` and ``rejected`` fields are those of the result (``ok`` and ``error``
were derived from them). Such a record decodes to the same result, and rendering it gives
the same status and body as before, so records left by the previous version during an
upgrade (they live ``IDEMPOTENCY_TTL_S``) replay unchanged. A record of another kind is
refused with :class:`~mailproxy.domain.errors.StorageError` rather than run again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from mailproxy.domain.access import Caller, idempotency_scope
from mailproxy.domain.errors import Conflict, InvalidInput, StorageError
from mailproxy.domain.model import SubmitResult
from mailproxy.ports.store import AccessStore

#: How long an ``Idempotency-Key`` is remembered, and after how long an unfinished request
#: with one is taken for dead (its key may then be used again).
IDEMPOTENCY_TTL_S = 86400.0
IDEMPOTENCY_STALE_S = 300.0

#: The ``status`` of a record that holds a JSON ``SubmitResult``: outside the HTTP range,
#: so it is never mistaken for the answer records of the previous version.
RESULT_RECORD = 1


def encode_result(result: SubmitResult) -> tuple[int, bytes]:
    """A result as the record's (status, body)."""
    return RESULT_RECORD, msgspec.json.encode(result)


def decode_result(status: int | None, body: bytes | None) -> SubmitResult:
    """The result a finished record holds, whichever version wrote it (see the module
    docstring)."""
    legacy_answer = status is not None and 200 <= status < 600
    if (status == RESULT_RECORD or legacy_answer) and body is not None:
        try:
            return msgspec.json.decode(body, type=SubmitResult)
        except msgspec.ValidationError as exc:
            raise StorageError(f"unreadable idempotency record: {exc}") from exc
    raise StorageError(f"unreadable idempotency record: kind {status}")


class Idempotency:
    """Runs submissions once per caller and key, through the access store's records."""

    def __init__(self, access: AccessStore, worker_id: str, clock: Callable[[], float]) -> None:
        self._access = access
        self._worker_id = worker_id
        self._clock = clock

    async def release_own(self) -> None:
        """Free the keys of requests that died with this worker's previous process."""
        await self._access.release_idempotent(self._worker_id)

    async def once(
        self,
        caller: Caller,
        key: str,
        fingerprint: str,
        submit: Callable[[], Awaitable[SubmitResult]],
    ) -> SubmitResult:
        """Run ``submit`` at most once per caller and ``key``: a repeat with the same
        ``fingerprint`` (of the request) gets the stored result; another fingerprint is
        :class:`InvalidInput`; a repeat while the first still runs is :class:`Conflict`.
        A submission that raised is not stored (the key may be retried)."""
        if not 0 < len(key) <= 255 or not key.isprintable():
            raise InvalidInput("Idempotency-Key", "invalid Idempotency-Key: 1..255 printable")
        scope = idempotency_scope(caller)
        start = await self._access.begin_idempotent(
            scope,
            key,
            fingerprint,
            self._clock(),
            ttl_s=IDEMPOTENCY_TTL_S,
            stale_s=IDEMPOTENCY_STALE_S,
            owner=self._worker_id,
        )
        if start.state == "replay":
            return decode_result(start.status, start.body)
        if start.state == "mismatch":
            raise InvalidInput(
                "Idempotency-Key", "Idempotency-Key already used with a different body"
            )
        if start.state == "busy":
            raise Conflict("a request with this Idempotency-Key is still being processed")
        try:
            result = await submit()
        except BaseException:
            await self._access.forget_idempotent(scope, key)
            raise
        await self._access.finish_idempotent(scope, key, *encode_result(result))
        return result
