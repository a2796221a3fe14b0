"""The service: :class:`MailProxy`, the library's front door, over one object per use
case (see :mod:`mailproxy.service.proxy`), with its options grouped in
:mod:`mailproxy.service.options`."""

from mailproxy.service.admin import Admin, CreatedTenant
from mailproxy.service.attachments import ENCODED_BODIES_KEPT, AttachmentFetcher
from mailproxy.service.config_cache import CONFIG_CACHE_S
from mailproxy.service.dispatcher import Dispatcher
from mailproxy.service.idempotency import IDEMPOTENCY_STALE_S, IDEMPOTENCY_TTL_S
from mailproxy.service.options import (
    AttachmentOptions,
    DeliveryOptions,
    LimitsOptions,
    ReportingOptions,
    RetentionOptions,
)
from mailproxy.service.proxy import MailProxy, unique_ids
from mailproxy.service.queries import MessageFilters, Queries
from mailproxy.service.reports import REPORT_POLL_S, ReportScheduler
from mailproxy.service.submission import Submission

__all__ = [
    "CONFIG_CACHE_S",
    "ENCODED_BODIES_KEPT",
    "IDEMPOTENCY_STALE_S",
    "IDEMPOTENCY_TTL_S",
    "REPORT_POLL_S",
    "Admin",
    "AttachmentFetcher",
    "AttachmentOptions",
    "CreatedTenant",
    "DeliveryOptions",
    "Dispatcher",
    "LimitsOptions",
    "MailProxy",
    "MessageFilters",
    "Queries",
    "ReportScheduler",
    "ReportingOptions",
    "RetentionOptions",
    "Submission",
    "unique_ids",
]
