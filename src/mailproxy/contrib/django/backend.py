"""Django's ``EMAIL_BACKEND`` on mailproxy: each ``EmailMessage`` becomes a message of
``POST /commands/add-messages``, queued in one call per ``send_messages``."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from email.mime.base import MIMEBase
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

from mailproxy.client import ApiError, Client, Rejected

#: Extra headers Django lets a message set but mailproxy writes itself (lower case).
WRITTEN_BY_MAILPROXY = frozenset({"to", "cc", "bcc", "date"})
#: Attributes of an ``EmailMessage`` passed on as the message fields of the same name.
MESSAGE_ATTRIBUTES = ("priority", "batch_code", "metadata", "deferred_ts", "account_id")


class EmailBackend(BaseEmailBackend):
    """Queues Django's mail in mailproxy (settings ``MAILPROXY_URL``, ``MAILPROXY_TOKEN``,
    optional ``MAILPROXY_TENANT``, ``MAILPROXY_ACCOUNT`` and ``MAILPROXY_RETRIES``, the
    client's retries of a send, 4 by default). ``send_messages`` returns
    how many were queued; without ``fail_silently`` it raises
    :class:`~mailproxy.client.Rejected` naming each refused message and its reason (the
    others are queued), or the client's error when the service cannot be reached."""

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        super().__init__(fail_silently=fail_silently, **kwargs)
        self.client: Client | None = None
        self.account_id: str | None = getattr(settings, "MAILPROXY_ACCOUNT", None)

    def open(self) -> bool:
        """Open the HTTP client (its connections are kept until :meth:`close`); whether
        this call opened it (Django's contract for connections)."""
        if self.client is not None:
            return False
        self.client = Client(
            settings.MAILPROXY_URL,
            token=settings.MAILPROXY_TOKEN,
            tenant_id=getattr(settings, "MAILPROXY_TENANT", None),
            retries=getattr(settings, "MAILPROXY_RETRIES", 4),
        )
        return True

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        messages = [self.message_of(m) for m in email_messages]
        opened = self.open()
        assert self.client is not None
        try:
            answer = self.client.send_many(messages)
        except Exception:
            if self.fail_silently:
                return 0
            raise
        finally:
            if opened:
                self.close()
        if answer.rejected and not self.fail_silently:
            reasons = "; ".join(f"{r.id}: {r.reason}" for r in answer.rejected)
            raise Rejected(200, f"{answer.queued} queued, rejected: {reasons}", answer.rejected)
        return answer.queued

    def message_of(self, email: EmailMessage) -> dict[str, Any]:
        """The add-messages fields of ``email``."""
        headers = {str(k): str(v) for k, v in email.extra_headers.items()}
        named = {k.lower(): k for k in headers}
        for name in WRITTEN_BY_MAILPROXY & set(named):
            raise ValueError(
                f"extra header {named[name]}: mailproxy writes it from the message's "
                "fields (to, cc, the Date it was queued)"
            )
        message: dict[str, Any] = {
            "id": getattr(email, "mailproxy_id", None) or uuid.uuid4().hex,
            "from": email.from_email or settings.DEFAULT_FROM_EMAIL,
            "to": list(email.to),
            "subject": str(email.subject),
            "body": str(email.body),
        }
        if email.content_subtype == "html":
            message["content_type"] = "html"
        for field, values in (("cc", email.cc), ("bcc", email.bcc)):
            if values:
                message[field] = list(values)
        if email.reply_to:
            message["reply_to"] = ", ".join(email.reply_to)
        # As Django does: an extra From is the header, from_email the envelope sender.
        if "from" in named:
            message["from"] = headers.pop(named["from"])
            message["return_path"] = email.from_email or settings.DEFAULT_FROM_EMAIL
        if "message-id" in named:
            message["message_id"] = headers.pop(named["message-id"]).strip().strip("<>")
        if "reply-to" in named:
            message["reply_to"] = headers.pop(named["reply-to"])
        if headers:
            message["headers"] = headers
        for content, mimetype in getattr(email, "alternatives", None) or ():
            if mimetype == "text/html":
                message["body_html"] = str(content)
        attachments = [_attachment(a) for a in email.attachments]
        if attachments:
            message["attachments"] = attachments
        if self.account_id is not None:
            message["account_id"] = self.account_id
        for name in MESSAGE_ATTRIBUTES:
            value = getattr(email, name, None)
            if value is not None:
                message[name] = value
        return message


def _attachment(attachment: Any) -> dict[str, Any]:
    """An attachment of Django's (a ``(filename, content, mimetype)`` tuple, or a MIME
    part) as a ``base64:`` attachment of the API; a MIME part with a ``Content-ID`` (an
    image the HTML shows with ``cid:``) goes inline beside the HTML."""
    content_id: str | None = None
    if isinstance(attachment, MIMEBase):
        filename = attachment.get_filename() or "attachment"
        payload = attachment.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        mimetype: str | None = attachment.get_content_type()
        if attachment["Content-ID"]:
            content_id = str(attachment["Content-ID"]).strip().strip("<>")
    else:
        filename, raw, mimetype = attachment
        content = raw.encode() if isinstance(raw, str) else bytes(raw)
    found: dict[str, Any] = {
        "filename": filename or "attachment",
        "storage_path": "base64:" + base64.b64encode(content).decode(),
    }
    if mimetype:
        found["mime_type"] = mimetype
    if content_id:
        found["content_id"] = content_id
    return found


__all__ = ["ApiError", "EmailBackend", "Rejected"]
