"""The service's options, grouped by the part of it they tune.

Each group is a frozen Struct with the defaults of an embedded service; ``bootstrap``
fills them from :class:`~mailproxy.config.Settings`. A library user or a test changes
only what it needs::

    MailProxy(..., delivery=DeliveryOptions(max_concurrency=4, lease_s=30))
"""

from __future__ import annotations

import msgspec

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.model import UnknownPolicy
from mailproxy.domain.policy import DEFAULT_AGING_S, WindowLengths, tenant_share
from mailproxy.domain.retry import RetryPolicy
from mailproxy.domain.validation import DEFAULT_LIMITS, MessageLimits


class DeliveryOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the dispatcher claims, sends and retries."""

    retry_policy: RetryPolicy = RetryPolicy()
    #: What an attempt with an unknown result becomes, unless its tenant says otherwise.
    unknown_policy: UnknownPolicy = "at_least_once"
    #: Sends at once in this process.
    max_concurrency: int = 32
    #: Sends at once per tenant in this process (None: half of ``max_concurrency``); see
    #: :attr:`sends_per_tenant`.
    tenant_concurrency: int | None = None
    #: How long a claim is held before another worker may take it over.
    lease_s: float = 300.0
    aging_s: float = DEFAULT_AGING_S
    window_lengths: WindowLengths = WindowLengths()
    #: How long a shutdown lets sends in flight finish.
    shutdown_grace_s: float = 30.0
    #: How long a message sent by a PEC account waits for its acceptance receipt, and
    #: for the delivery receipts of its recipients.
    pec_acceptance_timeout_s: float = 1800.0
    pec_delivery_timeout_s: float = 86_400.0

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise InvalidInput("max_concurrency", "invalid max_concurrency: at least 1")
        if self.sends_per_tenant < 1:
            raise InvalidInput("tenant_concurrency", "invalid tenant_concurrency: at least 1")

    @property
    def sends_per_tenant(self) -> int:
        """A tenant whose sends stall can hold this many slots, never all of them, so the
        others' messages still go at once."""
        if self.tenant_concurrency is None:
            return tenant_share(self.max_concurrency)
        return self.tenant_concurrency


class LimitsOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What one request, and a tenant's own key, may ask for."""

    #: Messages per add-messages call.
    max_batch: int = 1000
    message_limits: MessageLimits = DEFAULT_LIMITS
    #: The most ``max_connections`` a tenant's key may give an account (the admin may
    #: give more).
    tenant_max_connections: int = 10
    #: The most accounts a tenant's key may create in its tenant (each holds connections,
    #: metric series and a row; the admin may create more).
    tenant_max_accounts: int = 50


class AttachmentOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How much attachment content a message and the process may hold."""

    #: All the attachments of one message together (35 MiB).
    max_total_bytes: int = 36700160
    #: Fetches at once, over all messages: bounds the memory that attachments in flight
    #: can take (a tenant gets at most half of them).
    fetch_concurrency: int = 8


class ReportingOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How delivery reports reach the tenants' applications."""

    #: A heartbeat call at least this often, even with nothing to report.
    sync_interval_s: float = 300.0
    #: Report entries per call.
    batch: int = 500
    #: The longest back-off after failed calls.
    retry_max_s: float = 300.0
    #: Report calls started at once.
    concurrency: int = 8
    #: A call still running after this gives its slot up (see
    #: :meth:`~mailproxy.service.reports.ReportScheduler.in_report_slot`).
    slot_hold_s: float = 0.5
    #: After new entries wake the report loop, how long it lets more arrive before
    #: calling: a call per delivery would cost more CPU than the delivery itself.
    gather_s: float = 0.1
    #: How long one process holds the right to call a tenant's application.
    lease_s: float = 120.0


class RetentionOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How long final, reported messages are kept."""

    retention_s: float = 604800.0
    #: How often the dispatch loop looks for messages past the retention.
    check_s: float = 3600.0
