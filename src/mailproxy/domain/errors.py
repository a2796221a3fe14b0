"""The error tree of mailproxy.

::

    MailProxyError                 base of everything mailproxy raises on purpose
    ├── InvalidInput               bad input at the library boundary; names the field
    ├── NotFound                   an object the caller named does not exist in its scope
    ├── Conflict                   the request contradicts the current state
    ├── Forbidden                  the caller may not do this (scope or admin-only)
    ├── StorageError               the store could not do what was asked (I/O, locks, full disk)
    ├── AttachmentUnavailable      an attachment could not be fetched at send time
    └── MailboxUnavailable         a bounce mailbox could not be read

Each entrypoint maps these to status or exit codes in one place. Expected delivery outcomes
are values (see :mod:`mailproxy.domain.outcome`), never exceptions.
"""

from __future__ import annotations


class MailProxyError(Exception):
    """Something mailproxy refused or could not do."""


class InvalidInput(MailProxyError):
    """Input failed validation: ``field`` names where, ``reason`` says what is wrong.

    The message reads ``"<reason>"`` when the reason already names the field (the stable
    phrases of the API, such as ``"missing from"``) and ``"<field>: <reason>"`` otherwise.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(reason if field in reason else f"{field}: {reason}")


class NotFound(MailProxyError):
    """The named object does not exist (for this tenant)."""

    def __init__(self, kind: str, key: str) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} not found: {key}")


class Conflict(MailProxyError):
    """The request contradicts the current state (e.g. deleting an account still in use)."""


class Forbidden(MailProxyError):
    """The caller may not do this: another tenant's scope, or an admin-only action."""


class StorageError(MailProxyError):
    """The store failed; the operation was not applied (its transaction was rolled back)."""


class AttachmentUnavailable(MailProxyError):
    """An attachment could not be fetched; ``temporary`` says whether a retry may help."""

    def __init__(self, filename: str, reason: str, *, temporary: bool) -> None:
        self.filename = filename
        self.reason = reason
        self.temporary = temporary
        super().__init__(f"attachment {filename}: {reason}")


class MailboxUnavailable(MailProxyError):
    """A bounce mailbox could not be read: unreachable, TLS or certificate failure, login
    refused, folder missing, connection lost. ``mailbox`` names it (never its password)."""

    def __init__(self, mailbox: str, reason: str) -> None:
        self.mailbox = mailbox
        self.reason = reason
        super().__init__(f"bounce mailbox {mailbox}: {reason}")
