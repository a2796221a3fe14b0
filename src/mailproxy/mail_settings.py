"""The settings sections of :mod:`mailproxy.config` that face mail: ``[bounces]`` (the
shared bounce mailbox) and ``[submission]`` (SMTP submission, with the checks that a
listener they describe can work)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

import msgspec

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.model import BounceMailboxSpec


class BouncesSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[bounces]``: the instance's shared bounce mailbox."""

    #: IMAP host of the instance's shared bounce mailbox, which every account's VERP
    #: return path may point at (none: no shared mailbox; accounts may have their own).
    host: str | None = None
    #: Its port (993: implicit TLS).
    port: int = 993
    #: Login name.
    user: str | None = None
    #: Password.
    password: str | None = None
    #: `implicit` (TLS from the start), `starttls` or `none` (plaintext: the password
    #: crosses the network in the clear; meant for a mailbox on this machine).
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    #: Folder the bounces arrive in.
    folder: str = "INBOX"
    #: Folder processed messages are moved to (none: they are flagged where they are).
    processed_folder: str | None = None
    #: Seconds between looks at the folder when the server has no IMAP IDLE (with IDLE,
    #: new mail is read as it arrives; this is then the longest wait).
    poll_s: float = 60.0
    #: CA bundle that verifies the server's certificate (none: the system's).
    ca_file: str | None = None

    def mailbox(self) -> BounceMailboxSpec | None:
        """The shared mailbox, or None when ``host`` is not set."""
        if self.host is None:
            return None
        return BounceMailboxSpec(
            host=self.host, port=self.port, user=self.user or "", password=self.password,
            tls=self.tls, folder=self.folder, processed_folder=self.processed_folder,
            poll_s=self.poll_s,
        )  # fmt: skip


class PecSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[pec]``: how long a message sent by a PEC account waits for its receipts."""

    #: Seconds after sending without an acceptance receipt before `pec_timeout` is
    #: reported.
    acceptance_timeout_s: float = 1800.0
    #: Seconds after sending without a delivery (or error) receipt of every recipient
    #: before `pec_timeout` is reported.
    delivery_timeout_s: float = 86_400.0

    def __post_init__(self) -> None:
        if not 0 < self.acceptance_timeout_s <= self.delivery_timeout_s <= 30 * 86_400:
            raise InvalidInput(
                "pec",
                "invalid [pec]: 0 < acceptance_timeout_s <= delivery_timeout_s <= 30 days",
            )


class SubmissionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[submission]``: SMTP submission in ``serve``."""

    #: Port `serve` accepts SMTP submission on, with STARTTLS when `cert_file` is set
    #: (none: no SMTP listener; 587 is the usual one, 0: any free port).
    port: int | None = None
    #: Port for implicit TLS (RFC 8314; 465 is the usual one); needs `cert_file`.
    tls_port: int | None = None
    #: Address the SMTP listener binds to (default: `server.host`).
    host: str | None = None
    #: Name the listener greets with (default: this machine's host name).
    hostname: str | None = None
    #: PEM certificate chain for STARTTLS and implicit TLS.
    cert_file: str | None = None
    #: PEM private key of `cert_file`.
    key_file: str | None = None
    #: Allow AUTH without TLS from any address (loopback clients may always): the
    #: credentials then cross the network in the clear.
    allow_plaintext_auth: bool = False
    #: Larger messages are refused (552), announced with SIZE.
    max_message_bytes: int = 26214400
    #: Recipients per message (more: 452); in place of `delivery.max_recipients`, which
    #: bounds what the HTTP API takes.
    max_recipients: int = 1000
    #: Seconds a failed AUTH waits before its 535 (repeated failures from one address
    #: are throttled as the API's are: `security.auth_max_failures`).
    auth_failure_delay_s: float = 1.0
    #: Seconds a client may stay silent before the session is closed.
    idle_timeout_s: float = 300.0
    #: SMTP sessions at once in this process (more: 421 at connection): each holds a
    #: file descriptor the HTTP API needs too.
    max_sessions: int = 200
    #: Of those, the most from one client address.
    max_sessions_per_address: int = 20


def check_submission(submission: SubmissionSettings, server_host: str) -> None:
    """Ports in range; TLS material complete and present where TLS is asked for; and a
    listener that is not on loopback has TLS, unless plaintext AUTH is allowed outright
    (else no client there could ever authenticate)."""
    for key in ("port", "tls_port"):
        value = getattr(submission, key)
        if value is not None and not 0 <= value < 65536:
            raise InvalidInput(f"submission.{key}", f"invalid setting submission.{key}: 0..65535")
    for key in ("max_message_bytes", "max_recipients", "idle_timeout_s", "max_sessions",
                "max_sessions_per_address"):  # fmt: skip
        if getattr(submission, key) <= 0:
            raise InvalidInput(f"submission.{key}", f"invalid setting submission.{key}: positive")
    if not 0 <= submission.auth_failure_delay_s <= 30:
        raise InvalidInput(
            "submission.auth_failure_delay_s",
            "invalid setting submission.auth_failure_delay_s: 0..30",
        )
    if (submission.cert_file is None) != (submission.key_file is None):
        raise InvalidInput(
            "submission.key_file",
            "invalid setting submission.cert_file/key_file: set both or neither",
        )
    for key in ("cert_file", "key_file"):
        path = getattr(submission, key)
        if path is not None and not Path(path).is_file():
            raise InvalidInput(
                f"submission.{key}", f"invalid setting submission.{key}: no file {path}"
            )
    if submission.tls_port is not None and submission.cert_file is None:
        raise InvalidInput(
            "submission.tls_port",
            "invalid setting submission.tls_port: needs cert_file and key_file",
        )
    host = submission.host or server_host
    if (
        submission.port is not None
        and submission.cert_file is None
        and not submission.allow_plaintext_auth
        and not is_loopback_host(host)
    ):
        raise InvalidInput(
            "submission.cert_file",
            f"SMTP submission on {host} needs submission.cert_file and key_file (STARTTLS) "
            "or submission.allow_plaintext_auth = true: no client there could authenticate",
        )


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (no name is resolved)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
