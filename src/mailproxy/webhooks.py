"""Receiving mailproxy's delivery reports in an application: check that a report call
comes from the service, read its entries, and answer it.

    from mailproxy import webhooks

    entries = webhooks.verify(request.headers, request.body, secret)   # or InvalidSignature
    for entry in entries:
        ...   # entry.event: "sent", "error", "deferred", "unknown", "bounced", ...
    return webhooks.answer(queued=0)

A report call carries ``X-Mail-Proxy-Timestamp`` and ``X-Mail-Proxy-Signature:
v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`` (during a rotation of the tenant's
webhook secret, one ``v1=`` per secret, joined by ``", "``). :func:`verify` recomputes it
with the secrets the application knows, compares in constant time, and refuses a
timestamp further than ``tolerance_s`` from now, so that a recorded call cannot be
replayed later. Entries are de-duplicated by the application on ``event_id``: the
service sends an unacknowledged call again with the same entries.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from mailproxy.domain.model import ReportEvent
from mailproxy.domain.reporting import signature

TIMESTAMP_HEADER = "X-Mail-Proxy-Timestamp"
SIGNATURE_HEADER = "X-Mail-Proxy-Signature"
#: How far a call's timestamp may be from the receiver's clock.
TOLERANCE_S = 300.0

#: One delivery-report entry, as the HTTP API describes it ("Delivery reports").
Entry = ReportEvent


#: Seconds since the epoch, as the service writes them.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class InvalidSignature(Exception):
    """The call is not signed by a known secret, or its timestamp is stale: answer 401
    (the service sends the entries again later)."""


class _Report(msgspec.Struct):
    delivery_report: list[ReportEvent]


def verify(
    headers: Mapping[str, str] | Any,
    body: bytes,
    secret: str | Sequence[str],
    *,
    tolerance_s: float = TOLERANCE_S,
    now: float | None = None,
) -> list[Entry]:
    """The entries of a report call whose signature is one of ``secret`` (the current
    webhook secret, or a list: current and previous during a rotation), with a timestamp
    within ``tolerance_s`` of ``now``. ``headers`` is any mapping with case-insensitive
    or exact header names (a framework's request headers); ``body`` the raw bytes as
    received. Raises :class:`InvalidSignature`, or ``ValueError`` for a signed body that
    is not a report."""
    timestamp_text = _header(headers, TIMESTAMP_HEADER)
    given = _header(headers, SIGNATURE_HEADER)
    if timestamp_text is None or given is None:
        raise InvalidSignature("unsigned: no timestamp or signature header")
    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise InvalidSignature("malformed timestamp")
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise InvalidSignature("stale timestamp: outside the tolerance")
    secrets = [secret] if isinstance(secret, str) else list(secret)
    offered = [part.strip() for part in given.split(",") if part.strip()]
    expected = [signature(s, timestamp, body) for s in secrets if s]
    # Every pair is compared, so the time taken does not say which part matched.
    matched = False
    for candidate in offered:
        for wanted in expected:
            matched |= hmac.compare_digest(candidate.encode(), wanted.encode())
    if not matched:
        raise InvalidSignature("signature does not match")
    try:
        return msgspec.json.decode(body, type=_Report).delivery_report
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a delivery report: {exc}") from None


def answer(*, queued: int = 0, next_sync_after: int | None = None) -> bytes:
    """The JSON body acknowledging a report call: ``queued`` > 0 tells the service that
    the application has just queued messages (it calls again as soon as it has news);
    ``next_sync_after`` postpones heartbeat calls until then."""
    body: dict[str, Any] = {"ok": True, "queued": queued}
    if next_sync_after is not None:
        body["next_sync_after"] = next_sync_after
    return msgspec.json.encode(body)


def _header(headers: Mapping[str, str] | Any, name: str) -> str | None:
    found = headers.get(name)
    if found is None:
        found = headers.get(name.lower())
    if found is None and isinstance(headers, Mapping):
        lowered = name.lower()
        found = next((v for k, v in headers.items() if str(k).lower() == lowered), None)
    return None if found is None else str(found)
