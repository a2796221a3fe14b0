"""Turning a validated message into the bytes sent over SMTP, with the standard ``email``
package (no hand-made MIME; one policy shortcut writes a short ASCII header line exactly
as the package would): its classic API (``MIMENonMultipart``, ``Header``,
``formataddr``) for messages whose addresses are ASCII or IDNA-encodable, about four
times cheaper than the modern one; the modern API (``EmailMessage``, SMTPUTF8 policy)
for the rest, which need raw UTF-8 headers.

The serialised header block is checked after rendering, structurally: parsed line by
line, it must hold exactly the headers the message asks for (as many of each, so no
duplicate ``From`` and never ``Bcc``), no bare CR or LF, no line that is neither a header
nor a fold, no line over RFC 5322's 998 octets, and it must end with ``MIME-Version``,
which both renderers write last and which holds nothing from the client, so the body
cannot start earlier than ours. Each attachment part's headers are checked the same way.
That check is version-independent, so a header-injection bug in the ``email`` package
(CVE-2024-6923 on Python 3.11/3.12) cannot put a line on the wire that the client
smuggled in.
"""

from __future__ import annotations

import base64
import email.encoders
import email.policy
import email.utils
import hashlib
import re
import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.headerregistry import Address, AddressHeader, BaseHeader, HeaderRegistry
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from typing import Any

import msgspec

from mailproxy.domain.envelope import envelope_address, envelope_recipients
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.header_checks import check_header_block, check_part_headers
from mailproxy.domain.media_types import guess_type
from mailproxy.domain.model import MessageSpec
from mailproxy.domain.validation import address_of, idna_domain, is_mime_type, parse_mailbox

#: The last header of every rendered message and part: fixed text, nothing from the
#: client, so a blank line smuggled into any earlier header cuts it off.
_FINAL_HEADER = b"MIME-Version: 1.0"
#: An ASCII word longer than this is written as encoded words (see :func:`_classic_text`):
#: with a field name of up to 76 characters and ": " it still fits one line.
_MAX_PLAIN_WORD_CHARS = 900
_RFC2231_PIECE_CHARS = 60
#: Line breaks in a text body (only these: a form feed or U+2028 is content).
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class _MailboxPerLineHeader:
    """An address header written one mailbox per line, each as ``Address`` quotes it.

    The package's folder, splitting a quoted display name longer than a line, drops its
    quotes (Python 3.11), so that ``"Support, leak@evil.example, Team …" <r@example.com>``
    would show three addresses in ``To``; and it measures lines in characters, not in the
    octets of RFC 5322 §2.1.1. A mailbox (a display name of at most 300 octets, escaped,
    and an address of at most 254) fits a line of 998 octets on its own."""

    name: str
    addresses: tuple[Address, ...]

    def fold(self, *, policy: email.policy.EmailPolicy) -> str:
        mailboxes = [str(address) for address in self.addresses]
        return f"{self.name}: " + f",{policy.linesep} ".join(mailboxes) + policy.linesep


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
            if issubclass(cls, AddressHeader):
                built = self._built[cls] = type(built.__name__, (_MailboxPerLineHeader, built), {})
        return built


_SMTPUTF8 = email.policy.SMTPUTF8.clone(header_factory=_CachedHeaderRegistry())


class AttachmentContent(msgspec.Struct, frozen=True):
    filename: str
    content: bytes
    mime_type: str | None = None
    #: ``content`` already in its transfer form (:func:`encode_body`), when the caller
    #: keeps it for content that recurs (a cached attachment).
    encoded: bytes | None = None
    #: An inline part's Content-ID (``AttachmentRef.content_id``).
    content_id: str | None = None


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
    given, multipart/related around the body and its inline parts (attachments with a
    ``content_id``), multipart/mixed with attachments (RFC 2231 filenames), non-ASCII
    headers RFC 2047-encoded, ``Date`` and ``Message-ID`` as fixed at enqueue, ``Bcc``
    never written. Raises :class:`InvalidInput` if the serialised headers fail the check. A
    message submitted as it is (``spec.raw``) is not built: see :func:`as_submitted`."""
    if spec.raw is not None:
        return as_submitted(spec, spec.raw)
    recipients_all = (*spec.to, *spec.cc, *spec.bcc)
    addresses = [address_of(spec.return_path or spec.from_), *map(address_of, recipients_all)]
    utf8 = any(needs_smtputf8(a) for a in addresses) or needs_smtputf8(address_of(spec.from_))
    if utf8:
        content, placeholders = _modern(spec, message_id, date_ts, attachments)
    else:
        content, placeholders = _classic(spec, message_id, date_ts, attachments)
    check_header_block(content, expected_headers(spec, attachments), final_line=_FINAL_HEADER)
    part_headers = ["content-type", "content-transfer-encoding", "content-disposition"]
    part_headers += ["mime-version"] if utf8 else []
    for stand_in_line, placed in placeholders:
        inline = ["content-id"] if placed.content_id is not None else []
        check_part_headers(content, stand_in_line, part_headers + inline)
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
    return RenderedMessage(
        sender=sender,
        recipients=envelope_recipients(spec),
        content=content,
        needs_smtputf8=utf8,
        crlf_only=crlf_only,
        dot_lines=dot_lines,
    )


def as_submitted(spec: MessageSpec, content: bytes) -> RenderedMessage:
    """A submitted message as it goes out: its own bytes (kept with CRLF line ends), from
    the envelope sender to the envelope recipients."""
    sender = address_of(spec.return_path or spec.from_)
    recipients = envelope_recipients(spec)
    utf8 = needs_smtputf8(sender) or any(needs_smtputf8(r) for r in recipients)
    return RenderedMessage(
        sender=envelope_address(sender),
        recipients=recipients,
        content=content,
        needs_smtputf8=utf8,
        crlf_only=content.count(b"\n") == content.count(b"\r\n") == content.count(b"\r"),
        dot_lines=content.startswith(b".") or b"\n." in content,
    )


def expected_headers(spec: MessageSpec, attachments: Sequence[AttachmentContent]) -> list[str]:
    """The names (lower-case) of the headers the message must carry, one per header: from
    the spec, not from what was rendered, so that the check compares the two."""
    names = ["from", "to", "subject", "date", "message-id", "mime-version", "content-type"]
    names += ["cc"] if spec.cc else []
    names += ["reply-to"] if spec.reply_to else []
    names += [name.lower() for name in spec.headers]
    alternative = spec.content_type != "html" and spec.body_html is not None and spec.body
    if not (attachments or alternative):
        names.append("content-transfer-encoding")  # a multipart has none of its own
    return names


def _stand_in(message_id: str, index: int) -> bytes:
    """What an attachment part is built around: the email package encodes and writes a
    body line by line in Python (about 80 ms for 1 MB), so the part carries a short
    stand-in and the body, base64-encoded in C, takes its place in the serialised
    message. 24 bytes: one base64 line of 32 characters, easy to find again."""
    return hashlib.sha256(f"{message_id}\x00{index}".encode()).digest()[:24]


def _mime_type(attachment: AttachmentContent) -> tuple[str, str]:
    mime_type = attachment.mime_type or guess_type(attachment.filename)
    # Validated at enqueue; checked again because the type is written into the part's
    # header, and a message queued before that check may carry parameters in it.
    if not is_mime_type(mime_type):
        raise InvalidInput("attachments", f"invalid attachment mime_type: {mime_type!r}")
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
        msg.set_content(spec.body, subtype="html", cte=_forced_cte(spec.body))
    elif spec.body_html is not None and not spec.body:
        msg.set_content(spec.body_html, subtype="html", cte=_forced_cte(spec.body_html))
    else:
        msg.set_content(spec.body, cte=_forced_cte(spec.body))
        if spec.body_html is not None:
            msg.add_alternative(spec.body_html, subtype="html", cte=_forced_cte(spec.body_html))
    placeholders: Placed = []
    # Inline parts first: they join the HTML body in a multipart/related (inside the
    # alternative when there is one), which the first attachment then wraps in a
    # multipart/mixed.
    beside = msg.get_body(("html",)) if msg.is_multipart() else msg
    for index, attachment in _inline_first(attachments):
        maintype, subtype = _mime_type(attachment)
        stand_in = _stand_in(message_id, index)
        if attachment.content_id is not None:
            assert isinstance(beside, EmailMessage)
            beside.add_related(
                stand_in, maintype=maintype, subtype=subtype, filename=attachment.filename,
                cte="base64", cid=f"<{attachment.content_id}>", disposition="inline",
            )  # fmt: skip
        else:
            msg.add_attachment(
                stand_in, maintype=maintype, subtype=subtype, filename=attachment.filename,
                cte="base64",
            )  # fmt: skip
        placeholders.append((base64.b64encode(stand_in) + b"\r\n", attachment))
    del msg["MIME-Version"]
    msg["MIME-Version"] = "1.0"  # last: see _FINAL_HEADER
    return msg.as_bytes(policy=policy), placeholders


def _inline_first(
    attachments: Sequence[AttachmentContent],
) -> list[tuple[int, AttachmentContent]]:
    """The attachments with their index, the inline parts (``content_id``) first."""
    indexed = list(enumerate(attachments))
    return [p for p in indexed if p[1].content_id is not None] + [
        p for p in indexed if p[1].content_id is None
    ]


def _forced_cte(text: str) -> str | None:
    """Quoted-printable for a text with NUL, which no transfer encoding but QP and base64
    may carry (RFC 2045 §2.7, §2.8): the text arrives as given and nothing raw goes on the
    wire. Otherwise the package's choice."""
    return "quoted-printable" if "\x00" in text else None


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
    """The value as given when it is ASCII and can be folded at its spaces; otherwise
    RFC 2047 encoded words, which split anywhere and decode to exactly the text (the
    modern API does the same with a word too long for a line)."""
    if value.isascii() and all(len(word) <= _MAX_PLAIN_WORD_CHARS for word in value.split()):
        return value
    return Header(value, "utf-8")


def _classic_body(text: str, subtype: str) -> MIMENonMultipart:
    """A text part: 7bit when it is ASCII in lines of at most 998 octets without NUL
    (RFC 2045 §2.7), else quoted-printable, so nothing raw goes on the wire."""
    part = MIMENonMultipart("text", subtype)
    lines = _LINE_BREAK.split(text.removesuffix("\r\n").removesuffix("\n").removesuffix("\r"))
    short_ascii = text.isascii() and "\x00" not in text and all(len(line) <= 998 for line in lines)
    # Every line ends with a line break, the last one included (as the modern API writes
    # it, and as SMTP would add it anyway).
    part.set_payload("\n".join(lines) + "\n", _ASCII if short_ascii else _UTF8_QP)
    del part["MIME-Version"]  # the message's own, set once at the top
    return part


def _add_disposition(
    part: Message[Any, Any], filename: str, disposition: str = "attachment"
) -> None:
    """``Content-Disposition: attachment`` (or ``inline``) with the file name, RFC
    2231-encoded by the package; a name whose encoded form is too long for one line goes
    in RFC 2231 §3 continuations (``filename*0*``, ``filename*1*``, ...), which the
    package folds at their ";" and would otherwise write as one line of up to 3 kB."""
    encoded = email.utils.encode_rfc2231(filename, "utf-8")
    if filename.isascii() or len(encoded) <= _MAX_PLAIN_WORD_CHARS:
        part.add_header("Content-Disposition", disposition, filename=filename)
        return
    pieces = [""]
    for char in filename:  # whole characters per piece, for decoders that decode each
        quoted = urllib.parse.quote(char, safe="")
        if len(pieces[-1]) + len(quoted) > _RFC2231_PIECE_CHARS:
            pieces.append("")
        pieces[-1] += quoted
    params = [f"filename*{n}*={piece}" for n, piece in enumerate(pieces)]
    params[0] = params[0].replace("*=", "*=utf-8''", 1)
    part["Content-Disposition"] = "; ".join([disposition, *params])


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
    parts: dict[bool, list[Message[Any, Any]]] = {True: [], False: []}  # inline or not
    for index, attachment in _inline_first(attachments):
        part = MIMEBase(*_mime_type(attachment))
        del part["MIME-Version"]
        stand_in = _stand_in(message_id, index)
        part.set_payload(stand_in)
        email.encoders.encode_base64(part)
        inline = attachment.content_id is not None
        if inline:
            part["Content-ID"] = f"<{attachment.content_id}>"
        _add_disposition(part, attachment.filename, "inline" if inline else "attachment")
        parts[inline].append(part)
        placeholders.append((base64.b64encode(stand_in) + b"\r\n", attachment))
    if parts[True] and body.is_multipart():  # text and HTML: the HTML and its parts
        text, html = (part for part in body.walk() if not part.is_multipart())
        related = MIMEMultipart("related", _subparts=[html, *parts[True]])
        del related["MIME-Version"]
        body.set_payload([text, related])
    elif parts[True]:
        body = MIMEMultipart("related", _subparts=[body, *parts[True]])
        del body["MIME-Version"]
    msg = body
    if parts[False]:
        msg = MIMEMultipart("mixed", _subparts=[msg, *parts[False]])
    del msg["MIME-Version"]
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
    msg["MIME-Version"] = "1.0"  # last: see _FINAL_HEADER
    return msg.as_bytes(policy=_CLASSIC), placeholders
