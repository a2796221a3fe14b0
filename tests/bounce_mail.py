"""Bounce-mailbox messages for the tests, built with the ``email`` package: a delivery
status notification (RFC 3464), a feedback report (RFC 5965) and an auto-reply (RFC 3834),
each addressed to a return path that carries a correlation token."""

from __future__ import annotations

from email.message import EmailMessage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

BOUNCE_DOMAIN = "bounce.example.com"


def _report(kind: str, token: str, subject: str) -> MIMEMultipart:
    report = MIMEMultipart("report", report_type=kind)
    report["From"] = "MAILER-DAEMON@mx.example.org"
    report["To"] = f"bounces+{token}@{BOUNCE_DOMAIN}"
    report["Subject"] = subject
    report["Auto-Submitted"] = "auto-replied"
    return report


def _status_part(content_type: str, text: str) -> MIMEMessage:
    """A ``message/delivery-status`` or ``message/feedback-report`` part holding ``text``."""
    from email.parser import Parser

    groups = [Parser().parsestr(group + "\n") for group in text.strip().split("\n\n")]
    part = MIMEMessage(groups[0], content_type.split("/")[1])
    part.set_payload(groups)
    return part


def dsn(
    token: str,
    recipient: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 user unknown",
    groups: int = 1,
) -> bytes:
    """A DSN for ``recipient`` sent to the VERP address of ``token`` (with ``groups``
    identical recipient groups)."""
    report = _report("delivery-status", token, "Undelivered Mail Returned to Sender")
    report.attach(MIMEText(f"Delivery to {recipient} {action}.\n"))
    report.attach(
        _status_part(
            "message/delivery-status",
            "Reporting-MTA: dns; mx.example.org"
            + (
                f"\n\nFinal-Recipient: rfc822; {recipient}\nAction: {action}\n"
                f"Status: {status}\nDiagnostic-Code: {diagnostic}"
            )
            * groups,
        )
    )
    headers = MIMEText("", "rfc822-headers")
    headers.set_payload(f"To: {recipient}\nSubject: hello\n")
    report.attach(headers)
    return report.as_bytes()


def arf(token: str, recipient: str, feedback_type: str = "abuse") -> bytes:
    """A complaint about the message of ``token`` by ``recipient``."""
    report = _report("feedback-report", token, "Abuse report")
    report.attach(MIMEText("A recipient reported this message as spam.\n"))
    report.attach(
        _status_part(
            "message/feedback-report",
            f"Feedback-Type: {feedback_type}\nUser-Agent: reporter/1.0\nVersion: 1\n"
            f"Original-Rcpt-To: <{recipient}>",
        )
    )
    original = EmailMessage()
    original["To"] = recipient
    original["Subject"] = "hello"
    original.set_content("hello\n")
    report.attach(MIMEMessage(original))
    return report.as_bytes()


def auto_reply(token: str) -> bytes:
    reply = EmailMessage()
    reply["From"] = "someone@example.org"
    reply["To"] = f"bounces+{token}@{BOUNCE_DOMAIN}"
    reply["Subject"] = "Out of office"
    reply["Auto-Submitted"] = "auto-replied"
    reply.set_content("I am away until Monday.\n")
    return reply.as_bytes()


def human_mail() -> bytes:
    note = EmailMessage()
    note["From"] = "person@example.org"
    note["To"] = f"bounces@{BOUNCE_DOMAIN}"
    note["Subject"] = "Question about my order"
    note.set_content("Hello, where is my parcel?\n")
    return note.as_bytes()
