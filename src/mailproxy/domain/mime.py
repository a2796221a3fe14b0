"""Turning a validated message into the bytes sent over SMTP, with the standard ``email``
package (never string building).

The serialised header block is checked after rendering: it must contain exactly the
headers we set, no bare CR or LF, and never ``Bcc``. That check is version-independent,
so a header-injection bug in the ``email`` package (CVE-2024-6923 on Python 3.11/3.12)
cannot put a line on the wire that the client smuggled in.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import hashlib
import mimetypes
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage

import msgspec

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.model import MessageSpec
from mailproxy.domain.validation import address_of, idna_domain, parse_mailbox

_HEADER_LINE = re.compile(rb"^([!-9;-~]+):", re.MULTILINE)


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


_SMTP = email.policy.SMTP.clone(header_factory=_CachedHeaderRegistry())
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
    policy = _SMTPUTF8 if utf8 else _SMTP

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
    placeholders: list[tuple[bytes, AttachmentContent]] = []
    for index, attachment in enumerate(attachments):
        mime_type = (
            attachment.mime_type
            or mimetypes.guess_type(attachment.filename)[0]
            or "application/octet-stream"
        )
        maintype, _, subtype = mime_type.partition("/")
        # The email package encodes and writes a body line by line in Python (about 80 ms
        # for 1 MB); the part is built around a short stand-in instead, and the body,
        # base64-encoded in C, takes its place in the serialised message.
        # 24 bytes: one base64 line of 32 characters, easy to find again.
        stand_in = hashlib.sha256(f"{message_id}\x00{index}".encode()).digest()[:24]
        msg.add_attachment(
            stand_in, maintype=maintype, subtype=subtype, filename=attachment.filename, cte="base64"
        )
        placeholders.append((base64.b64encode(stand_in) + b"\r\n", attachment))

    content = msg.as_bytes(policy=policy)
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
