"""The composition root: Settings → adapters → MailProxy. Nothing is wired at import."""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable

from mailproxy.adapters.attachment_cache import TwoTierCache
from mailproxy.adapters.attachment_sources import EndpointSource, FilesystemSource, UrlSource
from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.dkim_signer import DkimpySigner
from mailproxy.adapters.guarded_http import GuardedHttp
from mailproxy.adapters.http_reports import HttpReportSender
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.prometheus import PrometheusMetrics
from mailproxy.adapters.resolver import ThreadedResolver
from mailproxy.adapters.sealed import (
    FernetCipher,
    ResealCount,
    SealedAccessStore,
    SealedConfigStore,
)
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import Settings
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.errors import InvalidInput, StorageError
from mailproxy.domain.model import BounceMailboxSpec
from mailproxy.domain.policy import WindowLengths
from mailproxy.domain.validation import MessageLimits
from mailproxy.ports.attachments import AttachmentSource
from mailproxy.ports.changes import ChangeFeed
from mailproxy.ports.mailbox import Mailbox
from mailproxy.ports.resolver import Resolver
from mailproxy.ports.signing import MessageSigner
from mailproxy.ports.store import Store
from mailproxy.service import (
    AttachmentOptions,
    DeliveryOptions,
    LimitsOptions,
    MailProxy,
    ReportingOptions,
    RetentionOptions,
)

log = logging.getLogger("mailproxy")

#: ``host=… dbname=…``: a libpq key=value string, not a file name.
_LOOKS_LIKE_CONNINFO = re.compile(r"(?:^|\s)(?:host|dbname|user|port)=\S")


def build_store(settings: Settings) -> Store:
    """``:memory:`` → the memory store; ``postgresql://…`` → PostgreSQL; a file path →
    SQLite."""
    db_path = settings.db_path
    if db_path == ":memory:":
        return MemoryStore()
    if settings.on_postgres:
        # Imported only when used: psycopg adds about 10 MB to every process.
        from mailproxy.adapters.postgres import PostgresStore

        return PostgresStore(db_path, pool_size=settings.storage.pool_size)
    if "://" in db_path:
        raise InvalidInput(
            "storage.db_path", f"unsupported storage.db_path: {db_path.split('://')[0]}:// URLs"
        )
    if _LOOKS_LIKE_CONNINFO.search(db_path):
        raise InvalidInput(
            "storage.db_path",
            "invalid storage.db_path: a PostgreSQL connection string must be a "
            "postgresql:// URL (key=value strings would be taken as a SQLite file name)",
        )
    max_size_mb = settings.storage.max_size_mb
    return SqliteStore(
        db_path,
        synchronous=settings.storage.synchronous,
        busy_timeout_s=settings.storage.busy_timeout_s,
        max_size_bytes=None if max_size_mb is None else int(max_size_mb * 1024 * 1024),
    )


async def check_storage(settings: Settings) -> None:
    """Open the configured store once (running its migrations) and close it, so that a
    database that cannot be used stops ``serve`` with one clear line instead of a failed
    start-up deep inside the server."""
    store = build_store(settings)
    try:
        await store.open()
    except StorageError as exc:
        # A PostgreSQL URL may hold a password: it is not repeated.
        where = store.path if isinstance(store, SqliteStore) else "on PostgreSQL"
        raise StorageError(f"cannot use the database {where}: {exc}") from exc
    try:
        plaintext = await SealedConfigStore(store, build_cipher(settings)).check()
    finally:
        await store.close()
    if plaintext and settings.security.encryption_keys:
        log.warning(
            "secrets.plaintext",
            extra={"count": plaintext, "hint": "run mail-proxy NAME rotate-key to encrypt them"},
        )


def build_cipher(settings: Settings) -> FernetCipher:
    """The cipher of stored secrets: ``security.encryption_key``'s keys, the first
    encrypting (none: secrets are stored as given)."""
    return FernetCipher(settings.security.encryption_keys)


async def reseal_secrets(
    settings: Settings, progress: Callable[[ResealCount], None] | None = None
) -> ResealCount:
    """Re-encrypt every stored secret with the first key of ``security.encryption_key``
    (plaintext ones included), on the configured store."""
    store = build_store(settings)
    sealed = SealedConfigStore(store, build_cipher(settings))
    await store.open()
    try:
        return await sealed.reseal(progress)
    finally:
        await store.close()


def build_attachments(
    settings: Settings, resolve: Resolver | None = None
) -> tuple[list[AttachmentSource], TwoTierCache]:
    """The attachment sources the settings enable (files only with a base_dir or allowed
    roots; URLs and endpoints always, behind the egress rule) and the cache."""
    options = settings.attachments
    egress = parse_networks(settings.security.egress_allow)
    http = GuardedHttp(timeout_s=options.fetch_timeout_s, egress_allow=egress, resolve=resolve)
    sources: list[AttachmentSource] = [
        UrlSource(http, egress, options.max_bytes),
        EndpointSource(
            http, egress, options.max_bytes,
            instance_endpoint=options.http_endpoint,
            auth_method=options.http_auth_method,
            auth_token=options.http_auth_token,
        ),
    ]  # fmt: skip
    roots = [r.strip() for r in (options.allowed_roots or "").split(",") if r.strip()]
    if options.base_dir or roots:
        sources.append(FilesystemSource(options.base_dir, roots, max_bytes=options.max_bytes))
    cache = TwoTierCache(
        memory_max_items=options.cache_memory_max_items,
        memory_max_bytes=int(options.cache_memory_max_mb * 1024 * 1024),
        disk_dir=options.cache_disk_dir,
        disk_max_bytes=int(options.cache_disk_max_mb * 1024 * 1024),
        ttl_s=options.cache_ttl_s,
    )
    return sources, cache


BOUNCES_EXTRA = "pip install 'mailproxy[bounces]'"


def bounce_mailboxes_possible() -> bool:
    """Whether the IMAP client of the ``bounces`` extra is installed."""
    return importlib.util.find_spec("aioimaplib") is not None


#: The operator's own mailbox (``[bounces]``) may be anywhere, loopback and private
#: networks included: the egress rule guards against what tenants configure.
_ANYWHERE = parse_networks("0.0.0.0/0,::/0")


def mailbox_opener(
    settings: Settings, resolve: Resolver
) -> Callable[[BounceMailboxSpec, str | None, str | None], Mailbox]:
    """How a bounce mailbox is opened: over IMAP, a tenant's behind the egress rule (as
    its SMTP hosts) and verified with its account's ``tls_ca_file``, the instance's
    shared one (``scope`` None) with ``bounces.ca_file``."""
    tenant_allow = parse_networks(settings.security.egress_allow)
    options = settings.delivery

    def open_mailbox(spec: BounceMailboxSpec, scope: str | None, ca_file: str | None) -> Mailbox:
        from mailproxy.adapters.imap import ImapMailbox

        return ImapMailbox(
            host=spec.host, port=spec.port, user=spec.user, password=spec.password or "",
            tls=spec.tls, folder=spec.folder, processed_folder=spec.processed_folder,
            ca_file=settings.bounces.ca_file if scope is None else ca_file,
            egress_allow=_ANYWHERE if scope is None else tenant_allow, resolve=resolve,
            scope=scope, connect_timeout_s=options.connect_timeout_s,
            command_timeout_s=options.command_timeout_s,
        )  # fmt: skip

    return open_mailbox


def delivery_options(settings: Settings) -> DeliveryOptions:
    """How the dispatcher claims, sends and retries, from ``[delivery]``, ``[retry]`` and
    ``[pec]``."""
    delivery = settings.delivery
    return DeliveryOptions(
        retry_policy=settings.retry,
        unknown_policy=delivery.unknown_policy,
        max_concurrency=delivery.max_concurrency,
        tenant_concurrency=delivery.tenant_concurrency,
        lease_s=delivery.lease_s,
        aging_s=delivery.priority_aging_s,
        window_lengths=WindowLengths(
            minute_s=delivery.minute_window_s,
            hour_s=delivery.hour_window_s,
            day_s=delivery.day_window_s,
        ),
        pec_acceptance_timeout_s=settings.pec.acceptance_timeout_s,
        pec_delivery_timeout_s=settings.pec.delivery_timeout_s,
    )


def build_proxy(settings: Settings, *, run_dispatcher: bool = True) -> MailProxy:
    """A MailProxy for ``settings``: its store, the SMTP and capture transports, the
    report sender, the attachment sources and cache, and the bounce mailboxes' opener
    (when the ``bounces`` extra is installed)."""
    if settings.bounces.host is not None and not bounce_mailboxes_possible():
        raise InvalidInput(
            "bounces.host", f"a shared bounce mailbox needs the IMAP client: {BOUNCES_EXTRA}"
        )
    store = build_store(settings)
    cipher = build_cipher(settings)
    delivery = settings.delivery
    # One resolver for every outbound kind, so that its per-tenant share of lookup
    # threads holds across them.
    resolve = ThreadedResolver()
    sources, cache = build_attachments(settings, resolve)
    return MailProxy(
        store=store,
        config=SealedConfigStore(store, cipher),
        outbox=store,
        access=SealedAccessStore(store, cipher),
        transports={
            "smtp": SmtpTransport(
                connect_timeout_s=delivery.connect_timeout_s,
                command_timeout_s=delivery.command_timeout_s,
                data_timeout_s=delivery.data_timeout_s,
                transaction_timeout_s=delivery.transaction_timeout_s,
                max_idle_connections=delivery.max_concurrency,
                resolve=resolve,
                egress_allow=parse_networks(settings.security.egress_allow),
            ),
            "capture": CaptureTransport(settings.capture_dir),
        },
        attachment_sources=sources,
        attachment_cache=cache,
        events=PrometheusMetrics(),
        reporter=HttpReportSender(
            timeout_s=settings.reporting.timeout_s,
            egress_allow=parse_networks(settings.security.egress_allow),
            resolve=resolve,
        ),
        delivery=delivery_options(settings),
        limits=LimitsOptions(
            max_batch=delivery.max_batch,
            message_limits=MessageLimits(
                max_recipients=delivery.max_recipients,
                max_headers=delivery.max_headers,
                max_attachments=delivery.max_attachments,
                max_metadata_bytes=delivery.max_metadata_bytes,
                max_metadata_depth=delivery.max_metadata_depth,
            ),
            tenant_max_connections=delivery.tenant_max_connections,
            tenant_max_accounts=delivery.tenant_max_accounts,
        ),
        attachments=AttachmentOptions(max_total_bytes=settings.attachments.max_total_bytes),
        reporting=ReportingOptions(
            sync_interval_s=settings.reporting.sync_interval_s,
            batch=settings.reporting.batch_size,
            gather_s=settings.reporting.gather_s,
            retry_max_s=settings.reporting.retry_max_delay_s,
        ),
        retention=RetentionOptions(retention_s=settings.reporting.retention_s),
        worker_id=settings.worker_id,
        run_dispatcher=run_dispatcher,
        changes=store if isinstance(store, ChangeFeed) else None,
        open_mailbox=mailbox_opener(settings, resolve) if bounce_mailboxes_possible() else None,
        shared_mailbox=settings.bounces.mailbox(),
        signer=build_signer(),
    )


def build_signer() -> MessageSigner | None:
    """The DKIM signer, or None without the ``dkim`` extra (a tenant's key then fails
    each attempt it should sign, saying what to install: never an unsigned send)."""
    try:
        return DkimpySigner()
    except ImportError:
        return None
