"""The composition root: Settings → adapters → MailProxy. Nothing is wired at import."""

from __future__ import annotations

from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.http_reports import HttpReportSender
from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import Settings
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.validation import MessageLimits
from mailproxy.service import MailProxy


def build_store(settings: Settings) -> MemoryStore | SqliteStore:
    """``:memory:`` → the memory store; a file path → SQLite."""
    db_path = settings.db_path
    if db_path == ":memory:":
        return MemoryStore()
    if "://" in db_path:
        raise InvalidInput(
            "storage.db_path", f"unsupported storage.db_path: {db_path.split('://')[0]}:// URLs"
        )
    return SqliteStore(db_path, synchronous=settings.storage.synchronous)


def build_proxy(settings: Settings, *, run_dispatcher: bool = True) -> MailProxy:
    """A MailProxy for ``settings``: its store, the SMTP and capture transports."""
    store = build_store(settings)
    delivery = settings.delivery
    return MailProxy(
        store=store,
        config=store,
        outbox=store,
        transports={
            "smtp": SmtpTransport(
                connect_timeout_s=delivery.connect_timeout_s,
                command_timeout_s=delivery.command_timeout_s,
                data_timeout_s=delivery.data_timeout_s,
            ),
            "capture": CaptureTransport(settings.capture_dir),
        },
        retry_policy=settings.retry,
        unknown_policy=delivery.unknown_policy,
        max_concurrency=delivery.max_concurrency,
        max_batch=delivery.max_batch,
        message_limits=MessageLimits(
            max_recipients=delivery.max_recipients,
            max_headers=delivery.max_headers,
            max_attachments=delivery.max_attachments,
            max_metadata_bytes=delivery.max_metadata_bytes,
            max_metadata_depth=delivery.max_metadata_depth,
        ),
        lease_s=delivery.lease_s,
        worker_id=settings.worker_id,
        aging_s=delivery.priority_aging_s,
        retention_s=settings.reporting.retention_s,
        reporter=HttpReportSender(
            timeout_s=settings.reporting.timeout_s,
            egress_allow=parse_networks(settings.security.egress_allow),
        ),
        sync_interval_s=settings.reporting.sync_interval_s,
        report_batch=settings.reporting.batch_size,
        report_retry_max_s=settings.reporting.retry_max_delay_s,
        run_dispatcher=run_dispatcher,
    )
