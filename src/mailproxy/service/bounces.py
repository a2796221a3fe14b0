"""Bounce mailboxes: read what arrives after the 250, and apply it exactly once.

One poller per mailbox (each account's ``bounce_mailbox``, and the instance's shared
one). A pass lists the folder's UIDs, skips those the store already has an entry for
(setting aside the ones still there: a crash came between the commit and the move),
fetches and parses each new message, resolves its correlation token to the sent
message, commits the entry (records, report events, suppressions) and only then sets
the committed messages aside. Unparseable messages are committed as ``unparsed`` and
left in place for people. Between passes the poller waits for the server's IDLE news or
``poll_s``.

Matching: a token's MAC must be right for the message it names; a per-account mailbox
only ever affects its own tenant's messages; the instance's shared mailbox affects any.
A mailbox that fails (unreachable, refused login, lost connection) is retried with a
backoff and never stops another mailbox, the dispatcher or the reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import msgspec

from mailproxy.domain.bounce_parsing import parse_report
from mailproxy.domain.bounces import (
    BounceFact,
    ComplaintFact,
    DelayFact,
    MailboxEntry,
    SuppressionSettings,
    address_key,
)
from mailproxy.domain.correlation import read_token, token_matches
from mailproxy.domain.envelope import envelope_recipients
from mailproxy.domain.errors import MailProxyError
from mailproxy.domain.model import BounceMailboxSpec, QueuedMessage
from mailproxy.domain.pec import PecReceipt, read_receipt
from mailproxy.domain.report_events import bounce_event, bounce_record, pec_receipt_event
from mailproxy.ports.mailbox import Mailbox, MailboxSession
from mailproxy.ports.observability import DeliveryEvents
from mailproxy.ports.store import BounceStore, ConfigStore

log = logging.getLogger("mailproxy")

#: Messages handled per pass before the poller looks at the time again (a large backlog
#: is worked through pass after pass, each committed as it goes).
PASS_SIZE = 200
RETRY_BASE_S = 5.0
RETRY_MAX_S = 300.0


class MailboxWatch(msgspec.Struct, kw_only=True):
    """What one poller knows, for the status page."""

    key: str
    tenant_id: str | None
    account_id: str | None
    connected: bool = False
    last_pass_ts: float | None = None
    last_error: str | None = None
    applied: int = 0
    unparsed: int = 0
    #: What the store records this mailbox's messages under: its key and whose it is
    #: (``*``: the shared one), so that two tenants reading one mailbox keep apart.
    record_key: str = ""


class _Source(msgspec.Struct, frozen=True):
    """One mailbox to watch: whose it is and its settings."""

    spec: BounceMailboxSpec
    tenant_id: str | None
    account_id: str | None
    #: The account's ``tls_ca_file``, which verifies its IMAP server as its SMTP one.
    ca_file: str | None = None
    #: The account is a PEC one: its mailbox receives the provider's receipts.
    pec: bool = False


class BounceMailboxes:
    """Runs a poller per configured mailbox; the set follows account changes."""

    def __init__(
        self,
        *,
        store: BounceStore,
        config: ConfigStore,
        open_mailbox: Callable[[BounceMailboxSpec, str | None, str | None], Mailbox],
        shared: BounceMailboxSpec | None,
        events: DeliveryEvents | None,
        clock: Callable[[], float],
        new_id: Callable[[], str],
        wake_reports: Callable[[], None],
        suppressions_changed: Callable[[str], None],
        refresh_s: float = 30.0,
    ) -> None:
        self._store = store
        self._config = config
        self._open_mailbox = open_mailbox
        self._shared = shared
        self._events = events
        self._clock = clock
        self._new_id = new_id
        self._wake_reports = wake_reports
        self._suppressions_changed = suppressions_changed
        self._refresh_s = refresh_s
        self._key = b""
        self._pollers: dict[_Source, asyncio.Task[None]] = {}
        self._watches: dict[_Source, MailboxWatch] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._stopping = False

    @property
    def watches(self) -> list[MailboxWatch]:
        return list(self._watches.values())

    def start(self, correlation_key: bytes, *, run_loop: bool) -> None:
        """Check tokens with ``correlation_key`` and, with ``run_loop``, start watching
        the mailboxes (without: :meth:`run_pass` is driven by the caller)."""
        self._key = correlation_key
        self._stopping = False
        if run_loop:
            self._loop_task = asyncio.create_task(self._follow_accounts(), name="mailproxy-bounces")

    def accounts_changed(self) -> None:
        """An account was stored or removed: look at the mailboxes again now."""
        self._changed.set()

    async def stop(self) -> None:
        self._stopping = True
        self._changed.set()
        tasks = [t for t in (self._loop_task, *self._pollers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pollers.clear()
        self._loop_task = None

    async def _sources(self) -> set[_Source]:
        found = set()
        if self._shared is not None:
            found.add(_Source(self._shared, None, None))
        for tenant in await self._config.list_tenants():
            for account in await self._config.list_accounts(tenant.id):
                if account.bounce_mailbox is not None:
                    found.add(
                        _Source(
                            account.bounce_mailbox, tenant.id, account.id, account.tls_ca_file,
                            account.pec,
                        )
                    )  # fmt: skip
        return found

    async def _follow_accounts(self) -> None:
        while not self._stopping:
            self._changed.clear()
            try:
                wanted = await self._sources()
            except MailProxyError as exc:
                log.error("bounces.accounts_unreadable", extra={"error": str(exc)})
                wanted = set(self._pollers)
            except Exception:
                log.exception("bounces.unexpected_error")
                wanted = set(self._pollers)
            for source in set(self._pollers) - wanted:
                self._pollers.pop(source).cancel()
                self._watches.pop(source, None)
            for source in wanted - set(self._pollers):
                mailbox = self._open_mailbox(source.spec, source.tenant_id, source.ca_file)
                watch = MailboxWatch(
                    key=mailbox.key, tenant_id=source.tenant_id, account_id=source.account_id
                )
                watch.record_key = record_key(mailbox.key, source.tenant_id)
                self._watches[source] = watch
                self._pollers[source] = asyncio.create_task(
                    self._poll(mailbox, source, watch), name=f"mailproxy-bounces-{mailbox.key}"
                )
            try:
                await self.expire_pec_watches()
            except MailProxyError as exc:
                log.error("bounces.pec_timeouts_failed", extra={"error": str(exc)})
            except Exception:
                log.exception("bounces.unexpected_error")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_s):
                    await self._changed.wait()

    async def _poll(self, mailbox: Mailbox, source: _Source, watch: MailboxWatch) -> None:
        failures = 0
        while not self._stopping:
            try:
                session = await mailbox.open()
                watch.connected, watch.last_error = True, None
                try:
                    while not self._stopping:
                        await self.run_pass(
                            watch.record_key, session, source.tenant_id, watch,
                            pec_account=source.account_id if source.pec else None,
                        )  # fmt: skip
                        failures = 0
                        await session.wait(source.spec.poll_s)
                finally:
                    watch.connected = False
                    await session.close()
            except asyncio.CancelledError:
                raise
            except MailProxyError as exc:  # MailboxUnavailable, or the store failed
                watch.last_error = str(exc)
                log.warning(
                    "bounces.mailbox_failed", extra={"mailbox": mailbox.key, "error": str(exc)}
                )
            except Exception as exc:
                watch.last_error = f"internal error: {type(exc).__name__}: {exc}"
                log.exception("bounces.unexpected_error", extra={"mailbox": mailbox.key})
            failures += 1
            await asyncio.sleep(min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (failures - 1)))

    async def run_pass(
        self,
        mailbox: str,
        session: MailboxSession,
        tenant_id: str | None,
        watch: MailboxWatch | None = None,
        *,
        pec_account: str | None = None,
    ) -> int:
        """Handle what the folder holds now (up to :data:`PASS_SIZE` new messages); return
        how many new messages were committed. ``pec_account``: the mailbox is that PEC
        account's, and a receipt in it is about one of its messages."""
        uidvalidity = session.uidvalidity
        uids = await session.uids()
        seen = await self._store.mailbox_seen(mailbox, uidvalidity, uids)
        # Committed before a crash but not set aside then: set aside now, never applied again.
        aside = [uid for uid, outcome in seen.items() if outcome != "unparsed"]
        new = [uid for uid in uids if uid not in seen][:PASS_SIZE]
        committed = 0
        for uid in new:
            raw = await session.fetch(uid)
            if raw is None:  # listed, then gone or without content: nothing to read
                entry = MailboxEntry(
                    mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, outcome="unparsed",
                    summary="the server gave no content for this message",
                    mailbox_tenant_id=tenant_id,
                )  # fmt: skip
            else:
                entry = await self._entry(mailbox, uidvalidity, uid, raw, tenant_id, pec_account)
            if await self._store.record_mailbox_entry(entry, self._clock()):
                committed += 1
                self._count(entry, watch)
                if entry.tenant_id is not None:
                    self._suppressions_changed(entry.tenant_id)
            if entry.outcome != "unparsed":
                aside.append(uid)
        if aside:
            await session.set_aside(sorted(aside))
        if watch is not None:
            watch.last_pass_ts = self._clock()
        return committed

    def _count(self, entry: MailboxEntry, watch: MailboxWatch | None) -> None:
        if entry.events:
            self._wake_reports()
        if watch is not None:
            watch.applied += entry.outcome == "applied"
            watch.unparsed += entry.outcome == "unparsed"
        log.info(
            f"bounces.{entry.outcome}",
            extra={
                "mailbox": entry.mailbox, "uid": entry.uid, "tenant": entry.tenant_id,
                "message_id": entry.message_id, "summary": entry.summary,
            },
        )  # fmt: skip
        if self._events is None:
            return
        self._events.mailbox_read(entry.outcome)
        if entry.tenant_id is not None:
            for record in entry.records:
                self._events.bounce_recorded(entry.tenant_id, record.kind)
        if entry.pec is not None and entry.outcome == "applied":
            self._events.pec_receipt(entry.pec.receipt, 1)

    async def _entry(
        self,
        mailbox: str,
        uidvalidity: int,
        uid: int,
        raw: bytes,
        owner: str | None,
        pec_account: str | None = None,
    ) -> MailboxEntry:
        if pec_account is not None and owner is not None:
            receipt = await asyncio.to_thread(read_receipt, raw)
            if receipt is not None:
                base = MailboxEntry(
                    mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, outcome="unmatched",
                    summary=f"PEC {receipt.receipt} of <{receipt.message_id}>",
                    mailbox_tenant_id=owner,
                )  # fmt: skip
                return await self._receipt_entry(base, receipt, owner, pec_account)
        # Off the event loop: a hostile message may take a second to read.
        report = await asyncio.to_thread(parse_report, raw)
        base = MailboxEntry(
            mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, outcome="unparsed",
            summary=report.summary, mailbox_tenant_id=owner,
        )  # fmt: skip
        if report.kind == "unparsed":
            return base
        facts: Sequence[BounceFact | ComplaintFact | DelayFact] = (
            *report.bounces, *report.complaints, *report.delays,
        )  # fmt: skip
        if report.kind == "auto_reply" or not facts:
            return msgspec.structs.replace(base, outcome="ignored")
        found = await self._message_of(report.tokens, owner)
        if found is None:
            return msgspec.structs.replace(base, outcome="unmatched")
        message, slot = found
        now = self._clock()
        envelope = _envelope_keys(message)
        only = next(iter(envelope.values())) if slot == 1 and len(envelope) == 1 else None
        # Only what concerns the message's own recipients (the one of a recipient token),
        # once each: anyone who received the message could send a "bounce" naming other
        # addresses, or the same one many times.
        kept: dict[tuple[type, str | None], BounceFact | ComplaintFact | DelayFact] = {}
        for fact in (_named(fact, only) for fact in facts):
            key = address_key(fact.recipient) if fact.recipient else None
            if key is None and not isinstance(fact, ComplaintFact):
                continue
            if key is not None and (
                key not in envelope or (only is not None and key != address_key(only))
            ):
                continue
            kept.setdefault((type(fact), key), fact)
        if not kept:
            return msgspec.structs.replace(base, outcome="unmatched")
        records = tuple(bounce_record(fact, now) for fact in kept.values())
        events = tuple(bounce_event(message, record, self._new_id()) for record in records)
        tenant = await self._config.get_tenant(message.tenant_id)
        settings = (tenant.suppression if tenant else None) or SuppressionSettings()
        return msgspec.structs.replace(
            base, outcome="applied", tenant_id=message.tenant_id, message_pk=message.pk,
            message_id=message.id, records=records, events=events, settings=settings,
        )  # fmt: skip

    async def _receipt_entry(
        self, base: MailboxEntry, receipt: PecReceipt, owner: str, account_id: str
    ) -> MailboxEntry:
        """A PEC receipt in the account's mailbox: about one of the account's messages,
        named by its Message-ID."""
        message = await self._store.message_by_message_id(owner, account_id, receipt.message_id)
        if message is None:
            return base
        event = pec_receipt_event(message, receipt, self._new_id(), self._clock())
        return msgspec.structs.replace(
            base, outcome="applied", tenant_id=owner, message_pk=message.pk,
            message_id=message.id, events=() if event is None else (event,), pec=receipt,
        )  # fmt: skip

    async def expire_pec_watches(self) -> int:
        """Report ``pec_timeout`` for the messages of PEC accounts whose receipts are
        late (every process may: the store reports each once)."""
        expired = await self._store.expire_pec_watches(self._clock(), PASS_SIZE)
        if expired:
            self._wake_reports()
            if self._events is not None:
                self._events.pec_receipt("timeout", expired)
        return expired

    async def _message_of(
        self, tokens: Sequence[str], owner: str | None
    ) -> tuple[QueuedMessage, int] | None:
        """The message the first valid token names (and its slot), within ``owner``'s
        messages when the mailbox is a tenant's."""
        for token in tokens:
            ref = read_token(token)
            if ref is None:
                continue
            message = await self._store.message_by_pk(ref.pk)
            if message is None or (owner is not None and message.tenant_id != owner):
                continue
            if token_matches(self._key, token, tenant_id=message.tenant_id, message_id=message.id):
                return message, ref.slot
        return None


def record_key(mailbox: str, owner: str | None) -> str:
    """What a mailbox's messages are recorded under: its owner (``*``: the instance's
    shared mailbox) and its key, so that two tenants reading one mailbox keep apart."""
    return f"{owner or '*'}:{mailbox}"


def mailbox_of(key: str) -> str:
    """The mailbox part of a :func:`record_key` (a tenant id holds no ``:``)."""
    return key.split(":", 1)[1] if ":" in key else key


def _envelope_keys(message: QueuedMessage) -> dict[str, str]:
    """The message's envelope recipients, by :func:`address_key`."""
    return {address_key(a): a for a in envelope_recipients(message.spec)}


def _named(
    fact: BounceFact | ComplaintFact | DelayFact, only: str | None
) -> BounceFact | ComplaintFact | DelayFact:
    """A complaint that names no recipient is about the message's only one, when the
    token says so (a VERP address of a one-recipient message)."""
    if isinstance(fact, ComplaintFact) and fact.recipient is None and only is not None:
        return msgspec.structs.replace(fact, recipient=only)
    return fact
