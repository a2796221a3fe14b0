"""Turning a validated message into the bytes sent over SMTP, with the standard ``email``
package (no hand-made MIME; one policy shortcut writes a short ASCII header line exactly
as the package would): its classic API (``MIMENonMultipart``, ``Header``,
``formataddr``) for messages whose addresses are ASCII or IDNA-encodable, about four
times cheaper than the modern one; the modern API (``EmailMessage``, SMTPUTF8 policy)
for the rest, which need raw UTF-8 headers.

The serialised header block is checked after rendering: it must contain exactly the
headers we set, no bare CR or LF, and never ``Bcc``. That check is version-independent,
so a header-injection bug in the ``email`` package (CVE-2024-6923 on Python 3.11/3.12)
cannot put a line on the wire that the client smuggled in.
"""

from __future__ import annotations

import base64
import email.encoders
import email.policy
import email.utils
import hashlib
import mimetypes
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from typing import Any

import msgspec

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.model import MessageSpec
from mailproxy.domain.validation import address_of, idna_domain, parse_mailbox

_HEADER_LINE = re.compile(rb"^([!-9;-~]+):", re.MULTILINE)
#: Line breaks in a text body (only these: a form feed or U+2028 is content).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class _CachedHeaderRegistry(HeaderRegistry):
    """The standard header factory, but each header class is built once.

    ``HeaderRegistry`` creates a new class with ``type()`` for every header it parses,
    which was the largest single cost of rendering a message; the classes it builds depend
    only on the registered class, so one per registered class is enough.
    """

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[type, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        cls = self.registry.get(name.lower(), self.default_class)
        built = self._built.get(cls)
        if built is None:
            built = self._built[cls] = super().__getitem__(name)
        return built


_SMTPUTF8 = email.policy.SMTPUTF8.clone(header_factory=_CachedHeaderRegistry())


class AttachmentContent(msgspec.Struct, frozen=True):
    filename: str
    content: bytes
    mime_type: str | None = None
    #: ``content`` already in its transfer form (:func:`encode_body`), when the caller
    #: keeps it for content that recurs (a cached attachment).
    encoded: bytes | None = None


def encode_body(content: bytes) -> bytes:
    """Base64 in lines of 76 characters ending in CRLF, as the message carries it."""
    encoded = base64.b64encode(content)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return b"\r\n".join(lines) + b"\r\n" if lines else b""


class RenderedMessage(msgspec.Struct, frozen=True):
    """What a transport needs: envelope and content."""

    sender: str
    recipients: tuple[str, ...]
    content: bytes
    needs_smtputf8: bool
    #: Every line ends in CRLF (no lone CR or LF): it may go out as it is.
    crlf_only: bool = False
    #: Some line starts with ".", so SMTP must dot-stuff it (never true of base64 lines).
    dot_lines: bool = True


class Outgoing(msgspec.Struct, frozen=True):
    """One message to send: who it belongs to and its rendered form."""

    tenant_id: str
    id: str
    rendered: RenderedMessage


def needs_smtputf8(addr: str) -> bool:
    """Only a non-ASCII local part needs SMTPUTF8; a non-ASCII domain is IDNA-encoded."""
    return not addr.rpartition("@")[0].isascii()


def envelope_address(addr: str) -> str:
    """The address as written in MAIL FROM / RCPT TO: IDNA domain unless SMTPUTF8 is
    needed anyway."""
    local, _, domain = addr.rpartition("@")
    if not local.isascii():
        return addr
    return f"{local}@{idna_domain(domain)}"


def _header_address(field: str, mailbox: str) -> Address:
    name, addr = parse_mailbox(field, mailbox)
    local, _, domain = addr.rpartition("@")
    if local.isascii():
        domain = idna_domain(domain)
    return Address(display_name=name, username=local, domain=domain)


def render(
    spec: MessageSpec,
    *,
    message_id: str,
    date_ts: float,
    attachments: Sequence[AttachmentContent] = (),
) -> RenderedMessage:
    """Build the MIME message: text or html, multipart/alternative when both bodies are
    given, multipart/mixed with attachments (RFC 2231 filenames), non-ASCII headers
    RFC 2047-encoded, ``Date`` and ``Message-ID`` as fixed at enqueue, ``Bcc`` never
    written. Raises :class:`InvalidInput` if the serialised headers fail the check."""
    recipients_all = (*spec.to, *spec.cc, *spec.bcc)
    addresses = [address_of(spec.return_path or spec.from_), *map(address_of, recipients_all)]
    utf8 = any(needs_smtputf8(a) for a in addresses) or needs_smtputf8(address_of(spec.from_))
    if utf8:
        content, placeholders = _modern(spec, message_id, date_ts, attachments)
    else:
        content, placeholders = _classic(spec, message_id, date_ts, attachments)
    expected = {"from", "to", "subject", "date", "message-id", "mime-version"}
    expected |= {"content-type", "content-transfer-encoding"}
    expected |= {"cc"} if spec.cc else set()
    expected |= {"reply-to"} if spec.reply_to else set()
    expected |= {name.lower() for name in spec.headers}
    check_header_block(content, expected)
    # Checked while still small: every line of it ends in CRLF, and so do the bodies that
    # replace the stand-ins, so the whole message does.
    crlf_only = content.count(b"\n") == content.count(b"\r\n") == content.count(b"\r")
    dot_lines = content.startswith(b".") or b"\n." in content
    if placeholders:
        pieces = []
        end = len(content)
        for stand_in_line, placed in reversed(placeholders):
            at = content.rfind(stand_in_line, 0, end)
            if at < 0:
                raise InvalidInput("attachments", "attachment body could not be placed")
            encoded = placed.encoded if placed.encoded is not None else encode_body(placed.content)
            pieces += [content[at + len(stand_in_line) : end], encoded]
            end = at
        pieces.append(content[:end])
        content = b"".join(reversed(pieces))
    sender = envelope_address(address_of(spec.return_path or spec.from_))
    recipients = tuple(dict.fromkeys(envelope_address(address_of(r)) for r in recipients_all))
    return RenderedMessage(
        sender=sender,
        recipients=recipients,
        content=content,
        needs_smtputf8=utf8,
        crlf_only=crlf_only,
        dot_lines=dot_lines,
    )


def _stand_in(message_id: str, index: int) -> bytes:
    """What an attachment part is built around: the email package encodes and writes a
    body line by line in Python (about 80 ms for 1 MB), so the part carries a short
    stand-in and the body, base64-encoded in C, takes its place in the serialised
    message. 24 bytes: one base64 line of 32 characters, easy to find again."""
    return hashlib.sha256(f"{message_id}\x00{index}".encode()).digest()[:24]


def _mime_type(attachment: AttachmentContent) -> tuple[str, str]:
    mime_type = (
        attachment.mime_type
        or mimetypes.guess_type(attachment.filename)[0]
        or "application/octet-stream"
    )
    maintype, _, subtype = mime_type.partition("/")
    return maintype, subtype


Placed = list[tuple[bytes, AttachmentContent]]


def _modern(
    spec: MessageSpec, message_id: str, date_ts: float, attachments: Sequence[AttachmentContent]
) -> tuple[bytes, Placed]:
    """The message through ``EmailMessage`` and the SMTPUTF8 policy: raw UTF-8 headers,
    for messages with a non-ASCII local part (which need SMTPUTF8 anyway)."""
    policy = _SMTPUTF8
    msg = EmailMessage(policy=policy)
    msg["From"] = _header_address("from", spec.from_)
    msg["To"] = tuple(_header_address("to", m) for m in spec.to)
    if spec.cc:
        msg["Cc"] = tuple(_header_address("cc", m) for m in spec.cc)
    if spec.reply_to:
        msg["Reply-To"] = _header_address("reply_to", spec.reply_to)
    msg["Subject"] = spec.subject
    msg["Date"] = email.utils.format_datetime(datetime.fromtimestamp(date_ts, UTC))
    msg["Message-ID"] = f"<{message_id}>"
    for name, value in spec.headers.items():
        msg[name] = value
    if spec.content_type == "html":
        msg.set_content(spec.body, subtype="html")
    elif spec.body_html is not None and not spec.body:
        msg.set_content(spec.body_html, subtype="html")
    else:
        msg.set_content(spec.body)
        if spec.body_html is not None:
            msg.add_alternative(spec.body_html, subtype="html")
    placeholders: Placed = []
    for index, attachment in enumerate(attachments):
        maintype, subtype = _mime_type(attachment)
        stand_in = _stand_in(message_id, index)
        msg.add_attachment(
            stand_in, maintype=maintype, subtype=subtype, filename=attachment.filename, cte="base64"
        )
        placeholders.append((base64.b64encode(stand_in) + b"\r\n", attachment))
    return msg.as_bytes(policy=policy), placeholders


#: The classic API of the email package: headers are kept as given (already validated)
#: instead of being parsed into objects and folded back, which made the modern API
#: about three quarters of the cost of rendering a message. RFC 2047 and RFC 2231
#: encodings still come from the package (``Header``, ``formataddr``, ``add_header``).
class _ClassicPolicy(email.policy.Compat32):
    """The classic policy, writing a short ASCII header as it is: the base class sends
    every value through ``Header.encode``, which returns such a value unchanged, at
    about a third of the cost of rendering the message. Anything longer or non-ASCII
    still goes through it (and the header block is checked after serialisation)."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        max_length = self.max_line_length or 0
        if (
            isinstance(value, str)
            and value.isascii()
            and len(name) + 2 + len(value) <= max_length
            and "\r" not in value
            and "\n" not in value
        ):
            return f"{name}: {value}{self.linesep}"
        folded: str = super()._fold(name, value, sanitize)  # type: ignore[misc]  # untyped private hook
        return folded


_CLASSIC = _ClassicPolicy(linesep="\r\n")
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # readable text, as the modern API chooses for most of it
_ASCII = Charset("us-ascii")  # built once: a Charset costs more than the 7bit body it marks


def _classic_address(field: str, mailbox: str) -> str:
    name, addr = parse_mailbox(field, mailbox)
    local, _, domain = addr.rpartition("@")
    return email.utils.formataddr((name, f"{local}@{idna_domain(domain)}"), charset="utf-8")


def _classic_text(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def _classic_body(text: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    lines = _LINE_BREAK.split(text.removesuffix("\r\n").removesuffix("\n").removesuffix("\r"))
    short_ascii = text.isascii() and all(len(line) <= 998 for line in lines)
    # Every line ends with a line break, the last one included (as the modern API writes
    # it, and as SMTP would add it anyway).
    part.set_payload("\n".join(lines) + "\n", _ASCII if short_ascii else _UTF8_QP)
    del part["MIME-Version"]  # the message's own, set once at the top
    return part


def _classic(
    spec: MessageSpec, message_id: str, date_ts: float, attachments: Sequence[AttachmentContent]
) -> tuple[bytes, Placed]:
    """The message through the classic API (every address ASCII or an IDNA domain)."""
    if spec.content_type == "html":
        body: Message[Any, Any] = _classic_body(spec.body, "html")
    elif spec.body_html is not None and not spec.body:
        body = _classic_body(spec.body_html, "html")
    elif spec.body_html is not None:
        body = MIMEMultipart(
            "alternative",
            _subparts=[_classic_body(spec.body, "plain"), _classic_body(spec.body_html, "html")],
        )
        del body["MIME-Version"]
    else:
        body = _classic_body(spec.body, "plain")
    placeholders: Placed = []
    msg = body
    if attachments:
        msg = MIMEMultipart("mixed", _subparts=[body])
        for index, attachment in enumerate(attachments):
            part = MIMEBase(*_mime_type(attachment))
            del part["MIME-Version"]
            stand_in = _stand_in(message_id, index)
            part.set_payload(stand_in)
            email.encoders.encode_base64(part)
            part.add_header("Content-Disposition", "attachment", filename=attachment.filename)
            msg.attach(part)
            placeholders.append((base64.b64encode(stand_in) + b"\r\n", attachment))
    if msg["MIME-Version"] is None:
        msg["MIME-Version"] = "1.0"
    msg["From"] = _classic_address("from", spec.from_)
    msg["To"] = ", ".join(_classic_address("to", m) for m in spec.to)
    if spec.cc:
        msg["Cc"] = ", ".join(_classic_address("cc", m) for m in spec.cc)
    if spec.reply_to:
        msg["Reply-To"] = _classic_address("reply_to", spec.reply_to)
    msg["Subject"] = _classic_text(spec.subject)
    msg["Date"] = email.utils.format_datetime(datetime.fromtimestamp(date_ts, UTC))
    msg["Message-ID"] = f"<{message_id}>"
    for name, value in spec.headers.items():
        msg[name] = _classic_text(value)
    return msg.as_bytes(policy=_CLASSIC), placeholders


def check_header_block(content: bytes, allowed: set[str]) -> None:
    """Refuse serialised headers with a bare CR/LF, a ``Bcc`` line, or any header name
    outside ``allowed`` (lower-case)."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[:end]
    if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
        raise InvalidInput("headers", "unsafe headers: bare line break in the serialised header")
    names = {m.group(1).decode("ascii").lower() for m in _HEADER_LINE.finditer(head)}
    unexpected = names - allowed
    if "bcc" in names or unexpected:
        raise InvalidInput(
            "headers", f"unsafe headers: unexpected {sorted(unexpected | (names & {'bcc'}))}"
        )
