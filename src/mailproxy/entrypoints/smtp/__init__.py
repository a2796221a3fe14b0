"""SMTP submission: aiosmtpd inside ``serve``, on the proxy the HTTP app serves (HTTP API,
"SMTP submission").

Every transaction needs AUTH (PLAIN or LOGIN): the user is a tenant id, or
``tenant/account`` to pick the account; the password is one of the tenant's API keys,
checked as the API checks it. AUTH is offered only over TLS (STARTTLS or the implicit-TLS
port), except to loopback clients or when the operator allows plaintext outright.
Failed AUTH answers 535 after ``auth_failure_delay_s``; past ``security.auth_max_failures``
failures within the window, an address is answered 454 without its credentials being
checked (the same throttle rule as the API's, kept apart: SMTP failures do not lock out
the address's HTTP calls).

Each RCPT is checked on its own (501 invalid, 550 suppressed, 452 past the recipient
limit: the others are still accepted); the final 250 to DATA is sent only once the message
is committed (``250 2.0.0 queued as <id>``), a store that cannot take it answers 451. The
service does the rest (``MailProxy.submit_raw``): a message submitted here is, downstream,
one posted over REST.

Shutdown: new connections are refused and new transactions answered 421; those in DATA
finish; then every session is told 421 and closed.
"""

from mailproxy.entrypoints.smtp.handler import (
    AUTH_CHECKS_AT_ONCE,
    COMMAND_BUDGETS,
    SubmissionHandler,
    SubmissionMetrics,
)
from mailproxy.entrypoints.smtp.listener import SubmissionListener, submission_listening
from mailproxy.entrypoints.smtp.session import (
    SubmissionSession,
    plaintext_auth_allowed,
    simple_path,
)

__all__ = [
    "AUTH_CHECKS_AT_ONCE",
    "COMMAND_BUDGETS",
    "SubmissionHandler",
    "SubmissionListener",
    "SubmissionMetrics",
    "SubmissionSession",
    "plaintext_auth_allowed",
    "simple_path",
    "submission_listening",
]
