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
import json
import re
from collections.abc import Sequence
from email.header import decode_header, make_header
from typing import Any

import msgspec

from mailproxy.domain.errors import InvalidInput

#: Control fields: what the REST API's message fields set, removed before sending.
CONTROL_FIELDS = {
    "x-mail-proxy-id": "id",
    "x-mail-proxy-priority": "priority",
    "x-mail-proxy-batch": "batch_code",
    "x-mail-proxy-deferred-until": "deferred_ts",
    "x-mail-proxy-metadata": "metadata",
}
#: Fields that never travel: the control fields, and ``Bcc`` (its addresses are in the
#: envelope; a receiver must not see them).
_DROPPED = frozenset({*CONTROL_FIELDS, "bcc"})
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_LINE_END = re.compile(rb"\r\n|\r|\n")


class SubmittedMail(msgspec.Struct, frozen=True, kw_only=True):
    """What the submitted message's header says, and the message as it will be kept."""

    #: The message without control fields and ``Bcc`` (Message-ID and Date not yet added).
    content: bytes
    #: The REST fields its control fields set (``id``, ``priority``, ``batch_code``,
    #: ``deferred_ts``, ``metadata``), as a client would send them.
    fields: dict[str, Any]
    message_id: str | None = None
    has_date: bool = False
    subject: str = ""


def _lines(raw: bytes) -> list[bytes]:
    return _LINE_END.split(raw)


def read_submitted(raw: bytes) -> SubmittedMail:
    """Read the header block of ``raw`` (up to the first empty line); raise
    :class:`InvalidInput` naming the control field whose value is malformed."""
    lines = _lines(raw)
    if lines and lines[-1] == b"":
        lines.pop()  # the final line end
    header_end = next((n for n, line in enumerate(lines) if line == b""), len(lines))
    kept: list[bytes] = []
    values: dict[str, str] = {}
    current: str | None = None
    for line in lines[:header_end]:
        if line[:1] in (b" ", b"\t") and current is not None:
            if current in _DROPPED:
                values[current] = values.get(current, "") + " " + _text(line.strip())
                continue
            kept.append(line)
            continue
        match = _FIELD_NAME.match(line)
        current = match[1].decode("ascii").lower() if match else None
        if current is None:
            kept.append(line)  # not a field: left as it is (the receiving server judges)
            continue
        value = _text(line[match.end() :].strip()) if match else ""
        if current in _DROPPED:
            values[current] = value
            continue
        if current in ("message-id", "subject") and current not in values:
            values[current] = value
        if current == "date":
            values["date"] = value
        kept.append(line)
    content = b"\r\n".join([*kept, *lines[header_end:]]) + b"\r\n"
    return SubmittedMail(
        content=content,
        fields=_control_fields(values),
        message_id=values.get("message-id") or None,
        has_date="date" in values,
        subject=_decoded(values.get("subject", "")),
    )


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def _control_fields(values: dict[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for header, name in CONTROL_FIELDS.items():
        if header not in values:
            continue
        value = values[header].strip()
        if name == "priority":
            fields[name] = int(value) if value.isdigit() else value.lower()
        elif name == "deferred_ts":
            if not value.isdigit():
                raise InvalidInput(
                    header, f"invalid {header}: expected Unix seconds, got {value[:40]!r}"
                )
            fields[name] = int(value)
        elif name == "metadata":
            try:
                metadata = json.loads(value)
            except ValueError:
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
    if mail.message_id is None:
        added += f"Message-ID: <{message_id}>\r\n".encode("ascii")
    if not mail.has_date:
        added += f"Date: {email.utils.formatdate(date_ts)}\r\n".encode("ascii")
    return added + mail.content


def envelope_fields(mail_from: str, recipients: Sequence[str]) -> dict[str, Any]:
    """The REST fields the envelope sets: the sender and the recipients (every one in
    ``to``: a submitted message's own header fields are not read for recipients)."""
    return {"from": mail_from, "to": list(recipients)}
