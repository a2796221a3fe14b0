"""Delivery: claim what is due, attempt it, settle the outcome; and the loop that does so.

Wake-ups are event-driven: a submit, a freed send slot and :meth:`Dispatcher.wake` wake
the loop at once; a timer wakes it only for the earliest future due time, the lease sweep
or the retention pass. One message's unexpected exception is recorded as a temporary
failure of that message and never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping

import msgspec

from mailproxy.domain.correlation import correlated
from mailproxy.domain.dkim import signing_key
from mailproxy.domain.envelope import author_domain, envelope_recipients
from mailproxy.domain.errors import (
    AttachmentUnavailable,
    InvalidInput,
    MailProxyError,
    StorageError,
)
from mailproxy.domain.lifecycle import decide, is_final, orphaned
from mailproxy.domain.mime import Outgoing, RenderedMessage, render
from mailproxy.domain.model import (
    Account,
    Claim,
    PecWatch,
    QueuedMessage,
    RefusedRecipient,
    Status,
    Tenant,
    Transition,
)
from mailproxy.domain.outcome import (
    Delivered,
    Outcome,
    OutsideWindow,
    Permanent,
    RateLimited,
    Temporary,
    Unknown,
)
from mailproxy.domain.policy import SlotGrant, account_window_key, rate_windows
from mailproxy.ports.observability import DeliveryEvents
from mailproxy.ports.signing import MessageSigner, SigningError
from mailproxy.ports.store import ConfigStore, MessageStore
from mailproxy.ports.transport import Transport
from mailproxy.service.attachments import AttachmentFetcher
from mailproxy.service.attempt_record import record_attempt
from mailproxy.service.config_cache import ConfigCache
from mailproxy.service.options import DeliveryOptions, RetentionOptions
from mailproxy.service.send_windows import opening_after, windows_of
from mailproxy.service.signing import NO_SIGNER

log = logging.getLogger("mailproxy")


class Dispatcher:
    """Sends the queued messages through the transport of their account's kind."""

    def __init__(
        self,
        *,
        store: MessageStore,
        config: ConfigStore,
        config_cache: ConfigCache,
        transports: Mapping[str, Transport],
        attachments: AttachmentFetcher,
        options: DeliveryOptions,
        retention: RetentionOptions,
        events: DeliveryEvents | None,
        worker_id: str,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        random_unit: Callable[[], float],
        new_id: Callable[[], str],
        wake_reports: Callable[[], None],
        signer: MessageSigner | None = None,
        suppressions_changed: Callable[[str], None] = lambda tenant_id: None,
    ) -> None:
        self._store = store
        #: The key of the correlation tokens (``domain.correlation``), the store's own:
        #: set by :meth:`start_with_key` before the first send.
        self._correlation_key = b""
        self._config = config
        self._config_cache = config_cache
        self._transports = transports
        self._attachments = attachments
        self._options = options
        self._retention = retention
        self._events = events
        self._worker_id = worker_id
        self._clock = clock
        self._monotonic = monotonic
        self._random_unit = random_unit
        self._new_id = new_id
        #: Told when an attempt's refusals suppressed addresses of the tenant.
        self._suppressions_changed = suppressions_changed
        self._wake_reports = wake_reports
        self._signer = signer
        self._wake_event = asyncio.Event()
        #: When the loop's timer ends (clock time; inf: no timer) while it sleeps; None
        #: while it claims or works out how long to sleep.
        self._asleep_until: float | None = None
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._smtp_seconds: dict[int, float] = {}
        self._next_purge = 0.0
        self._next_sweep = 0.0

    def wake(self) -> None:
        """Something may have become claimable: claim now rather than at the timer."""
        self._wake_event.set()

    def claimable_at(self, due_ts: float | None) -> None:
        """Messages were stored that a claim may take from ``due_ts`` (None: none may, they
        are suspended): wake the loop unless its timer ends by then anyway. A loop that is
        not asleep is woken too: it may have read the queue before they were stored."""
        if due_ts is None:
            return
        if self._asleep_until is None or due_ts < self._asleep_until:
            self._wake_event.set()

    def start(self, *, run_loop: bool, correlation_key: bytes) -> None:
        """Plan the first lease sweep a period away (the start has just recovered) and,
        with ``run_loop``, start the dispatch loop; ``correlation_key`` signs the tokens
        every sent message carries."""
        self._correlation_key = correlation_key
        self._stopping = False
        self._next_sweep = self._monotonic() + self._sweep_period_s()
        if run_loop:
            self._loop_task = asyncio.create_task(self._loop(), name="mailproxy-dispatch")

    def begin_stop(self) -> None:
        """Claim nothing more."""
        self._stopping = True
        self._wake_event.set()

    async def stop(self) -> None:
        """Claim nothing more; let in-flight sends finish (up to the grace period), then
        close the transports. Sends cut off are settled at the next start."""
        self.begin_stop()
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        if self._inflight:
            _, late = await asyncio.wait(self._inflight, timeout=self._options.shutdown_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def close_transports(self) -> None:
        for transport in self._transports.values():
            await transport.close()

    async def recover(self, *, own: bool) -> int:
        """Settle this worker's leases (``own``) or every expired one: attempts that had
        started become ``unknown`` (then follow the policy); claims that had not are
        re-queued. Returns how many attempts were settled as unknown."""
        claims = await self._store.recover(
            owner=self._worker_id, now=self._clock(), lease_s=self._options.lease_s, own=own
        )
        for claim in claims:
            reason = (
                "the attempt was interrupted (process stopped or lease expired during the send)"
            )
            await self._settle(claim, Unknown(reason))
        return len(claims)

    async def dispatch_once(self) -> int:
        """Claim what is due now (up to ``max_concurrency``), attempt it, and wait until
        every attempt is settled. Returns how many messages were attempted."""
        claims = await self._claim(self._clock(), self._options.max_concurrency)
        await asyncio.gather(*(self._attempt(claim) for claim in claims))
        return len(claims)

    async def run_until_idle(self) -> int:
        """Dispatch until nothing is due at the current clock; return the attempts made."""
        total = 0
        while attempted := await self.dispatch_once():
            total += attempted
        return total

    async def _claim(self, now: float, limit: int) -> list[Claim]:
        return await self._store.claim_due(
            now=now,
            limit=limit,
            owner=self._worker_id,
            lease_s=self._options.lease_s,
            tenant_limit=self._options.sends_per_tenant,
        )

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake_event.clear()
            await self._purge_if_due()
            await self._sweep_if_due()
            free = self._options.max_concurrency - len(self._inflight)
            claimed = 0
            claimed_at = self._clock()
            if free > 0:
                try:
                    claims = await self._claim(claimed_at, free)
                except MailProxyError as exc:
                    log.error("dispatch.claim_failed", extra={"error": str(exc)})
                    await self._sleep(1.0)
                    continue
                for claim in claims:
                    task = asyncio.create_task(self._attempt(claim))
                    self._inflight.add(task)
                    task.add_done_callback(self._attempt_done)
                claimed = len(claims)
            if self._stopping or (free > 0 and claimed == free):
                continue
            await self._sleep(await self._idle_timeout(claimed_at))

    def _attempt_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake_event.set()

    async def _idle_timeout(self, claimed_at: float) -> float | None:
        """How long the loop may sleep: until the next message or pause comes due, or the
        next retention pass. Messages that were due when the loop last claimed but were
        not claimable (their account is busy) wait for an attempt to finish, which wakes
        the loop; one that came due after that claim, even while this is computed, is due
        now (looking only past the current time would miss it until the next sweep)."""
        until_purge = max(0.0, min(self._next_purge, self._next_sweep) - self._monotonic())
        try:
            due = await self._store.next_due_ts(claimed_at)
        except MailProxyError as exc:
            log.error("dispatch.next_due_failed", extra={"error": str(exc)})
            return 1.0
        return until_purge if due is None else min(until_purge, max(0.0, due - self._clock()))

    async def _sleep(self, seconds: float | None) -> None:
        self._asleep_until = math.inf if seconds is None else self._clock() + seconds
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._wake_event.wait()
        finally:
            self._asleep_until = None

    def _sweep_period_s(self) -> float:
        return max(1.0, self._options.lease_s / 2)

    async def _sweep_if_due(self) -> None:
        """Take over expired leases (a process that died or hung mid-send) twice per
        lease period: with several processes on one store, the survivors settle what a
        dead one held."""
        if self._monotonic() < self._next_sweep:
            return
        self._next_sweep = self._monotonic() + self._sweep_period_s()
        try:
            settled = await self.recover(own=False)
        except MailProxyError as exc:
            log.error("dispatch.sweep_failed", extra={"error": str(exc)})
            return
        if settled:
            log.warning("dispatch.expired_leases", extra={"settled": settled})

    async def _purge_if_due(self) -> None:
        if self._monotonic() < self._next_purge:
            return
        self._next_purge = self._monotonic() + self._retention.check_s
        try:
            cutoff = self._clock() - self._retention.retention_s
            removed = await self._store.purge_final(None, cutoff)
        except MailProxyError as exc:
            log.error("retention.purge_failed", extra={"error": str(exc)})
            return
        if removed:
            log.info("retention.purged", extra={"removed": removed})

    async def _attempt(self, claim: Claim) -> None:
        message = claim.message
        try:
            outcome = await self._try_send(claim)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception(
                "dispatch.unexpected_error",
                extra={"tenant": message.tenant_id, "message_id": message.id},
            )
            outcome = Temporary(f"internal error: {type(exc).__name__}: {exc}")
        if outcome is not None:
            await self._settle(claim, outcome)

    async def _try_send(self, claim: Claim) -> Outcome | None:
        """The outcome of one attempt; None when the lease was lost (another worker took
        the message over, and settles it)."""
        message = claim.message
        account = await self._config_cache.account(message.tenant_id, message.account_id)
        if account is None and message.failover_from is not None:
            # The fallback the claim chose was deleted since: the message's own account
            # still decides, at the next claim.
            return Temporary(f"fallback account {message.account_id} was deleted")
        if account is None:
            return Permanent(
                f"account not found for tenant {message.tenant_id}: {message.account_id}"
            )
        transport = self._transports.get(account.kind)
        if transport is None:
            return Permanent(f"no transport for account kind {account.kind!r}")
        tenant = await self._config_cache.tenant(message.tenant_id)
        own = account if message.failover_from is None else await self._own_account(message)
        opens = opening_after(windows_of(tenant, own), message.priority, self._clock())
        if opens is not None:
            return OutsideWindow(opens)
        windows = rate_windows(tenant, account, self._options.window_lengths)
        if windows:
            now = self._clock()
            grant = await self._store.reserve_slots(claim.lease, windows, now)
            if grant is None:
                self._lease_lost(message)
                return None
            if grant.at_ts > now:
                return RateLimited(
                    grant.at_ts,
                    grant.window or "rate limit",
                    reject=account.limit_behavior == "reject",
                    failover_after_s=await self._failover_after_s(message, grant),
                )
        try:
            rendered = render(
                message.spec,
                message_id=message.message_id,
                date_ts=message.date_ts,
                attachments=await self._attachments.contents(message.tenant_id, message.spec),
            )
        except InvalidInput as exc:
            return Permanent(f"message refused before sending: {exc}")
        except AttachmentUnavailable as exc:
            return Temporary(str(exc)) if exc.temporary else Permanent(str(exc))
        own_return_path = message.spec.return_path is not None
        rendered = correlated(
            rendered, self._correlation_key, pk=message.pk, tenant_id=message.tenant_id,
            message_id=message.id, return_path=None if own_return_path else account.return_path,
        )  # fmt: skip
        # Checked at each attempt, not at acceptance: an address suppressed since then
        # is not sent to (read with the claim: claim_due).
        suppressed = claim.suppressed
        dropped = tuple(
            RefusedRecipient(a, None, "suppressed") for a in rendered.recipients if a in suppressed
        )
        if dropped:
            if len(dropped) == len(rendered.recipients):
                return Permanent("suppressed", None, dropped)
            kept = tuple(a for a in rendered.recipients if a not in suppressed)
            rendered = msgspec.structs.replace(rendered, recipients=kept)
        signed = self._signed(rendered, message, tenant)
        if not isinstance(signed, RenderedMessage):
            return signed
        rendered = signed
        if not await self._store.mark_sending(claim.lease, self._clock()):
            self._lease_lost(message)
            return None
        started = self._monotonic()
        outcome = await transport.send(
            account, Outgoing(tenant_id=message.tenant_id, id=message.id, rendered=rendered)
        )
        self._smtp_seconds[claim.lease.pk] = self._monotonic() - started
        if dropped and isinstance(outcome, Delivered):
            outcome = msgspec.structs.replace(outcome, refused=outcome.refused + dropped)
        return outcome

    async def _watched(
        self, message: QueuedMessage, outcome: Outcome, transition: Transition, now: float
    ) -> Transition:
        """``transition`` (sent) with the PEC receipts to wait for, when a PEC account
        sent the message: acceptance, and a delivery receipt of each recipient it took."""
        if message.failover_from is not None:
            return transition  # receipts of a fallback's sends are not followed
        account = await self._config_cache.account(message.tenant_id, message.account_id)
        if account is None or not account.pec:
            return transition
        refused = len(outcome.refused) if isinstance(outcome, Delivered) else 0
        watch = PecWatch(
            acceptance_due_ts=now + self._options.pec_acceptance_timeout_s,
            delivery_due_ts=now + self._options.pec_delivery_timeout_s,
            recipients=max(1, len(envelope_recipients(message.spec)) - refused),
        )
        return msgspec.structs.replace(transition, pec_watch=watch)

    async def _own_account(self, message: QueuedMessage) -> Account | None:
        """The message's own account (not the fallback sending it)."""
        return await self._config_cache.account(
            message.tenant_id, message.failover_from or message.account_id
        )

    async def _fallbacks_of(self, message: QueuedMessage) -> Account | None:
        """The message's own account when it has fallbacks (it may be sent through one)."""
        home = await self._own_account(message)
        return home if home is not None and home.fallback_accounts else None

    async def _failover_after_s(self, message: QueuedMessage, grant: SlotGrant) -> float | None:
        """The wait past which a rate-limited message goes to a fallback instead: its own
        account's ``failover_after_s`` when that account has fallbacks and the window
        that made it wait is the sending account's own (a tenant's window holds every
        account of the tenant alike)."""
        if grant.key != account_window_key(message.tenant_id, message.account_id):
            return None
        home = await self._fallbacks_of(message)
        return None if home is None else home.failover_after_s

    def _signed(
        self, rendered: RenderedMessage, message: QueuedMessage, tenant: Tenant | None
    ) -> RenderedMessage | Temporary:
        """``rendered`` with a DKIM signature when the tenant has a key for the author's
        domain; a failure is a temporary error of the account, and nothing is sent
        unsigned that should have been signed."""
        if tenant is None or not tenant.dkim_keys:
            return rendered
        domain = author_domain(message.spec)
        key = signing_key(tenant.dkim_keys, domain) if domain else None
        if key is None:
            return rendered
        try:
            if self._signer is None:
                raise SigningError(NO_SIGNER)
            content = self._signer.sign(rendered.content, key)
        except SigningError as exc:
            if self._events is not None:
                self._events.signed(message.tenant_id, "failed")
            return Temporary(f"DKIM signing failed: {exc}", account_level=True)
        if self._events is not None:
            self._events.signed(message.tenant_id, "signed")
        return msgspec.structs.replace(rendered, content=content)

    async def _settle(self, claim: Claim, outcome: Outcome) -> None:
        message = claim.message
        tenant = await self._config_cache.tenant(message.tenant_id)
        policy = (tenant.unknown_policy if tenant else None) or self._options.unknown_policy
        now = self._clock()
        transition = decide(
            message,
            outcome,
            now=now,
            policy=self._options.retry_policy,
            unknown_policy=policy,
            jitter_sample=self._random_unit() * 2.0 - 1.0,
            event_id=self._new_id(),
            pause=claim.pause,
            failover=await self._fallbacks_of(message) is not None,
        )
        if transition.status is Status.SENT:
            transition = await self._watched(message, outcome, transition, now)
        # Only an attempt that reached the transport can outlive its account; a rate
        # deferral (frequent under limits) saves the read.
        retried = not is_final(transition.status) and not isinstance(outcome, RateLimited)
        if retried and await self._account_gone(message):
            transition = orphaned(message, transition, now, self._new_id())
        try:
            applied = await self._store.complete(claim.lease, transition, now)
        except StorageError as exc:
            log.error(
                "dispatch.complete_failed",
                extra={"tenant": message.tenant_id, "message_id": message.id, "error": str(exc)},
            )
            return
        smtp_seconds = self._smtp_seconds.pop(claim.lease.pk, None)
        if not applied:
            self._lease_lost(message)
            return
        if transition.bounces:
            self._suppressions_changed(message.tenant_id)
        if not isinstance(outcome, OutsideWindow):  # nothing was attempted
            record_attempt(self._events, message, outcome, transition, smtp_seconds, now)
        if transition.events:
            self._wake_reports()
        if transition.status is not Status.SENT and transition.status is not Status.ERROR:
            self._wake_event.set()  # a retry may be due earlier than the current timer

    async def _account_gone(self, message: QueuedMessage) -> bool:
        """Whether the message's account was deleted (read from the store, not the cache:
        a deletion while the attempt ran must be seen)."""
        try:
            account = await self._config.get_account(
                message.tenant_id, message.failover_from or message.account_id
            )
        except MailProxyError:
            return False  # a store that cannot be read now will not take the completion either
        return account is None

    @staticmethod
    def _lease_lost(message: QueuedMessage) -> None:
        log.warning(
            "dispatch.lease_lost", extra={"tenant": message.tenant_id, "message_id": message.id}
        )
