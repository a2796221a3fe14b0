"""Mail submitted as it is (SMTP submission): its header fields read, our own control
fields and ``Bcc`` taken out, ``Message-ID`` and ``Date`` added when absent — and
otherwise the bytes the client sent, byte for byte (HTTP API, "SMTP submission").

The header block is handled as bytes, line by line (a field and its folded
continuation lines together), so that nothing else in it is rewritten; the ``email``
package is used only to read the values of the few fields that matter here. Line
endings become CRLF, as SMTP carries them. Pure: ``now`` and the new ids come in.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from email.header import decode_header, make_header
from typing import Any

import msgspec

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.validation import parse_mailbox

#: Control fields: what the REST API's message fields set, removed before sending.
CONTROL_FIELDS = {
    "x-mail-proxy-id": "id",
    "x-mail-proxy-priority": "priority",
    "x-mail-proxy-batch": "batch_code",
    "x-mail-proxy-deferred-until": "deferred_ts",
    "x-mail-proxy-metadata": "metadata",
}
#: Fields that never travel: the control fields, and ``Bcc`` and ``Resent-Bcc`` (their
#: addresses are in the envelope; a receiver must not see them).
_DROPPED = frozenset({*CONTROL_FIELDS, "bcc", "resent-bcc"})
#: Fields kept but read (the first of each).
_READ = frozenset({"message-id", "subject", "date"})
_ANGLE_ID = re.compile(r"<[^<>\s]+>")
#: ASCII digits only (``str.isdigit`` takes other scripts' digits, and superscripts).
_DIGITS = re.compile(r"[0-9]{1,20}")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_LINE_END = re.compile(rb"\r\n|\r|\n")
#: Two line ends in a row (a CR followed by LF is one): the end of the header block.
_HEADER_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
#: The most a header block may hold: a message is refused past it (a header this large
#: is no mail; reading it line by line would cost the process memory for nothing).
MAX_HEADER_BYTES = 1024 * 1024


class SubmittedMail(msgspec.Struct, frozen=True, kw_only=True):
    """What the submitted message's header says, and the message as it will be kept."""

    #: The message without control fields and ``Bcc`` (Message-ID and Date not yet added).
    content: bytes
    #: The REST fields its control fields set (``id``, ``priority``, ``batch_code``,
    #: ``deferred_ts``, ``metadata``), as a client would send them.
    fields: dict[str, Any]
    #: The ``<id>`` of its Message-ID field, when it has one that can be read.
    message_id: str | None = None
    has_message_id: bool = False
    has_date: bool = False
    subject: str = ""


def read_submitted(raw: bytes) -> SubmittedMail:
    """Read the header block of ``raw`` (up to the first empty line; none when the first
    line is not a header field); raise :class:`InvalidInput` naming the control field
    whose value is malformed or given twice, or a header block past
    :data:`MAX_HEADER_BYTES`. Linear in the size of ``raw``; only the header is split
    into lines (the body is one piece, its line ends made CRLF)."""
    body: bytes | None
    if _FIELD_NAME.match(raw) is None:
        # No header at all: the whole message is its body, after an empty line, so that
        # the fields added in front of it stay a header.
        header, body = b"", raw
    elif (blank := _HEADER_END.search(raw)) is not None:
        header, body = raw[: blank.start()], raw[blank.end() :]
    else:
        header, body = raw, None
    if len(header) > MAX_HEADER_BYTES:
        raise InvalidInput(
            "header", f"invalid header: larger than {MAX_HEADER_BYTES} bytes before the body"
        )
    lines = _LINE_END.split(header) if header else []
    if lines and lines[-1] == b"":
        lines.pop()  # the final line end of a message without body
    kept: list[bytes] = []
    #: The values read, each a list of its lines (joined once: a field folded over many
    #: lines must not cost their number squared).
    values: dict[str, list[bytes]] = {}
    current: str | None = None
    reading: list[bytes] | None = None
    for line in lines:
        if line[:1] in (b" ", b"\t") and current is not None:
            if reading is not None:
                reading.append(line.strip())
            if current not in _DROPPED:
                kept.append(line)
            continue
        match = _FIELD_NAME.match(line)
        current = match[1].decode("ascii").lower() if match else None
        reading = None
        if match is None or current is None:
            kept.append(line)  # not a field: left as it is (the receiving server judges)
            continue
        if current in CONTROL_FIELDS and current in values:
            raise InvalidInput(current, f"invalid {current}: given twice")
        if current in _DROPPED or (current in _READ and current not in values):
            reading = values[current] = [line[match.end() :].strip()]
        if current not in _DROPPED:
            kept.append(line)
    content = b"".join(line + b"\r\n" for line in kept)
    if body is not None:
        body = _LINE_END.sub(b"\r\n", body)
        content += b"\r\n" + body + (b"\r\n" if body and not body.endswith(b"\r\n") else b"")
    text = {name: b" ".join(parts) for name, parts in values.items()}
    return SubmittedMail(
        content=content,
        fields=_control_fields(text),
        message_id=_message_id(_text(text.get("message-id", b""))),
        has_message_id="message-id" in text,
        has_date="date" in text,
        subject=_decoded(_text(text.get("subject", b""))),
    )


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _message_id(value: str) -> str | None:
    """The ``<id>`` of a Message-ID field's value (comments and folding around it
    ignored), or None."""
    found = _ANGLE_ID.search(value)
    return found[0] if found else None


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _control_fields(values: dict[str, bytes]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for header, name in CONTROL_FIELDS.items():
        if header not in values:
            continue
        try:
            value = values[header].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise InvalidInput(header, f"invalid {header}: not UTF-8") from None
        if name == "priority":
            fields[name] = int(value) if _DIGITS.fullmatch(value) else value.lower()
        elif name == "deferred_ts":
            if not _DIGITS.fullmatch(value):
                raise InvalidInput(
                    header, f"invalid {header}: expected Unix seconds, got {value[:40]!r}"
                )
            fields[name] = int(value)
        elif name == "metadata":
            try:
                # Strict JSON, as over REST: no NaN, no lone surrogates, bounded depth.
                metadata = msgspec.json.decode(value)
            except (msgspec.DecodeError, RecursionError):
                raise InvalidInput(header, f"invalid {header}: not JSON") from None
            if not isinstance(metadata, dict):
                raise InvalidInput(header, f"invalid {header}: expected a JSON object")
            fields[name] = metadata
        else:
            fields[name] = value
    return fields


def completed(mail: SubmittedMail, *, message_id: str, date_ts: float) -> bytes:
    """The message as it is kept and sent: ``Message-ID: <message_id>`` and ``Date``
    first when the client gave none."""
    added = b""
    if not mail.has_message_id:
        added += f"Message-ID: <{message_id}>\r\n".encode("ascii")
    if not mail.has_date:
        added += f"Date: {email.utils.formatdate(date_ts)}\r\n".encode("ascii")
    return added + mail.content


def envelope_fields(mail_from: str, recipients: Sequence[str]) -> dict[str, Any]:
    """The REST fields the envelope sets: the sender and the recipients (every one in
    ``to``: a submitted message's own header fields are not read for recipients)."""
    return {"from": mail_from, "to": list(recipients)}


_FROM_FIELD = re.compile(
    rb"^From[ \t]*:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE
)


def author_address_of(content: bytes) -> str | None:
    """The address of the ``From`` field of a kept message (``content`` with CRLF line
    ends), unfolded and read as the API reads a ``from`` (one mailbox, a valid address);
    None when it has no ``From`` field, or one that is not exactly one such mailbox."""
    end = content.find(b"\r\n\r\n")
    header = content if end < 0 else content[: end + 2]
    fields = _FROM_FIELD.findall(header)
    if len(fields) != 1:
        return None
    text = fields[0].replace(b"\r\n", b"").decode("utf-8", "replace").strip()
    try:
        return parse_mailbox("from", text)[1]
    except (InvalidInput, ValueError, RecursionError):
        return None
