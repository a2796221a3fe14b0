"""Validation at the edge: addresses, ids and whole messages (header names and values in
:mod:`mailproxy.domain.headers`, tenants and accounts in :mod:`mailproxy.domain.configuration`).

Validation is syntactic only (no DNS). Every failure raises :class:`InvalidInput` whose
reason starts with a stable lowercase phrase that names the field, per the HTTP API ("Details
clients rely on").

Addresses are checked here with the standard library rather than a third-party validator
because the domain layer imports only the standard library and msgspec; the rules are
the RFC 5321 ones a relay needs (dot-atom local part, lengths, IDNA domains), not
deliverability.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from mailproxy.domain.decoding import convert_error, enum_reason
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.headers import (
    CONTROL,
    check_header_name,
    check_header_value,
    hides_control_characters,
)
from mailproxy.domain.model import (
    PRIORITY_BY_LABEL,
    AttachmentRef,
    MessageSpec,
    Priority,
)

MAX_ID_CHARS = 200
MAX_BATCH_CODE_CHARS = 64
MAX_METADATA_BYTES = 4096
MAX_RECIPIENTS = 100
MAX_HEADERS = 50
MAX_ATTACHMENTS = 20
MAX_LOCAL_PART_OCTETS = 64
MAX_DOMAIN_OCTETS = 255
MAX_PATH_OCTETS = 254  # RFC 5321 §4.5.3.1.3: 256 octets including the angle brackets
#: A display name is written on one line with its address (``formataddr`` neither folds
#: inside a quoted name nor splits its encoded word): 300 octets, escaped (x2) or
#: base64-encoded (x4/3), stay with a 254-octet address within RFC 5322's 998.
MAX_DISPLAY_NAME_OCTETS = 300
MAX_MESSAGE_ID_CHARS = 250

# atext of RFC 5322 plus any non-ASCII character (RFC 6531 UTF-8 local parts).
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+")
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_NAME_ADDR = re.compile(r"(?P<name>.*?)\s*<(?P<addr>[^<>]*)>\s*")
# RFC 5322 §3.6.4 msg-id: dot-atom-text on either side of the "@" (dots anywhere), so the
# header parser neither drops a comment nor splits at a special.
MESSAGE_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+")
# RFC 2045 §5.1 token: a MIME type is "type/subtype" and nothing else (no parameters).
_MIME_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`{|}~\-]{1,127}"
_MIME_TYPE = re.compile(f"{_MIME_TOKEN}/{_MIME_TOKEN}")
_MD5_MARKER = re.compile(r"_?\{MD5:(?P<hex>[0-9a-fA-F]{32})\}")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_TENANT_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


# --- bounds of client integers -----------------------------------------------------------
# A value the storage cannot hold (SQLite and PostgreSQL integers are 64-bit) would surface
# as a storage failure, and an absurd one (a key valid until the year 10**22) as silent
# nonsense: every integer a client gives has a range, for HTTP and library callers alike.

#: The last second of 9999-12-31 UTC: the latest instant a client may name.
MAX_TS = 253402300799
#: Largest rate limit (messages per window) and similar counts: a PostgreSQL ``integer``.
MAX_COUNT = 2**31 - 1
#: Largest ``max_connections`` of an account.
MAX_CONNECTIONS = 1000


# --- addresses --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def idna_domain(domain: str) -> str:
    """The ASCII (IDNA) form of ``domain``; raises ``ValueError`` when it is not a valid
    host name. Cached: a queue holds few distinct domains, each seen several times per
    message (validation, headers, envelope)."""
    if domain.startswith("[") or not domain or domain.endswith("."):
        raise ValueError("invalid domain")
    labels = domain.split(".")
    ascii_labels = []
    for label in labels:
        if label.isascii():
            ascii_label = label
        else:
            try:
                ascii_label = label.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise ValueError("invalid international domain") from exc
        if not _LDH_LABEL.fullmatch(ascii_label):
            raise ValueError("invalid domain label")
        ascii_labels.append(ascii_label)
    ascii_domain = ".".join(ascii_labels)
    if len(ascii_domain) > MAX_DOMAIN_OCTETS:
        raise ValueError(f"domain longer than {MAX_DOMAIN_OCTETS} octets")
    return ascii_domain


def check_addr_spec(field: str, addr: str) -> str:
    """Validate a bare ``local@domain`` per RFC 5321 and return it unchanged."""

    def bad(why: str) -> InvalidInput:
        return InvalidInput(field, f"invalid address in {field}: {addr!r} ({why})")

    if CONTROL.search(addr) or hides_control_characters(addr):
        raise bad("control characters")
    try:
        addr.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        raise bad("not UTF-8") from None
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain:
        raise bad("expected local@domain")
    if local.startswith('"'):
        raise bad("quoted local parts are not accepted")
    if any(not _ATOM.fullmatch(atom) for atom in local.split(".")):
        raise bad("invalid local part")
    if len(local.encode()) > MAX_LOCAL_PART_OCTETS:
        raise bad(f"local part longer than {MAX_LOCAL_PART_OCTETS} octets")
    try:
        ascii_domain = idna_domain(domain)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if len(local.encode()) + 1 + len(ascii_domain) > MAX_PATH_OCTETS:
        raise bad(f"longer than {MAX_PATH_OCTETS} octets")
    return addr


@functools.lru_cache(maxsize=4096)
def parse_mailbox(field: str, value: str) -> tuple[str, str]:
    """Split ``Display Name <addr@domain>`` or ``addr@domain`` into (name, address).
    Cached (the sender of a batch is usually one mailbox; refusals are not cached)."""
    check_header_value(field, value)
    match = _NAME_ADDR.fullmatch(value.strip())
    if match:
        name, addr = match["name"].strip(), match["addr"].strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    else:
        name, addr = "", value.strip()
    if len(name.encode("utf-8", "surrogatepass")) > MAX_DISPLAY_NAME_OCTETS:
        raise InvalidInput(
            field, f"invalid {field}: display name longer than {MAX_DISPLAY_NAME_OCTETS} octets"
        )
    return name, check_addr_spec(field, addr)


def check_mailbox(field: str, value: str) -> str:
    parse_mailbox(field, value)
    return value.strip()


def split_address_list(value: str) -> list[str]:
    """Split a comma-separated address list, honouring commas inside quoted names."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def address_of(mailbox: str) -> str:
    """The addr-spec of an already validated mailbox."""
    match = _NAME_ADDR.fullmatch(mailbox.strip())
    return match["addr"].strip() if match else mailbox.strip()


# --- ids --------------------------------------------------------------------------------


def check_path_id(field: str, value: str) -> str:
    """Refuse an id that cannot be named in a URL path (``GET /messages/{id}``,
    ``DELETE /account/{id}``): a ``/`` ends the path segment even percent-encoded, the
    server decodes a percent-escape once more than a client encodes it, and clients
    resolve ``.`` and ``..`` as dot-segments before sending."""
    if not 0 < len(value) <= MAX_ID_CHARS or CONTROL.search(value):
        raise InvalidInput(field, f"invalid {field}: 1..{MAX_ID_CHARS} printable chars")
    if "/" in value or "%" in value or value in (".", ".."):
        raise InvalidInput(
            field, f"invalid {field}: no '/' or '%', not '.' or '..' (an id is a URL path segment)"
        )
    return value


def is_tenant_id(value: str) -> bool:
    """``[A-Za-z0-9_.-]{1,64}``, per the HTTP API, but not the dot-segments ``.`` and
    ``..``, which a client resolves away before ``/tenant/{id}`` reaches the server."""
    return bool(_TENANT_ID.fullmatch(value)) and value not in (".", "..")


# --- messages ---------------------------------------------------------------------------


class _AttachmentInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    filename: str
    storage_path: str
    fetch_mode: Literal["base64", "filesystem", "endpoint", "http_url"] | None = None
    mime_type: str | None = None
    content_md5: str | None = None
    content_id: str | None = None
    #: Accepted for compatibility and dropped: no source uses it, and a credential that
    #: nothing needs is not kept in the queue.
    auth: dict[str, Any] | None = None


class _MessageInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    from_: str = msgspec.field(name="from")
    to: list[str] | str
    subject: str
    tenant_id: str | None = None
    account_id: str | None = None
    cc: list[str] | str | None = None
    bcc: list[str] | str | None = None
    reply_to: str | None = None
    return_path: str | None = None
    body: str = ""
    content_type: Literal["plain", "html"] = "plain"
    body_html: str | None = None
    headers: dict[str, str] | None = None
    message_id: str | None = None
    attachments: list[_AttachmentInput] | None = None
    priority: int | str | None = None
    deferred_ts: int | None = None
    batch_code: str | None = None
    metadata: dict[str, Any] | None = None


_PRIORITY_NAMES = [*(str(int(p)) for p in Priority), *PRIORITY_BY_LABEL]
_MESSAGE_FIELDS = frozenset(f.encode_name for f in msgspec.structs.fields(_MessageInput))
_REQUIRED_FIELDS = ("id", "from", "to", "subject")


def parse_priority(value: object, field: str = "priority") -> Priority:
    """Accept an int 0..3 or a label (``"immediate"`` … ``"low"``)."""
    if isinstance(value, int) and not isinstance(value, bool) and value in list(Priority):
        return Priority(value)
    if isinstance(value, str) and value.lower() in PRIORITY_BY_LABEL:
        return PRIORITY_BY_LABEL[value.lower()]
    raise InvalidInput(field, enum_reason(field, repr(value), _PRIORITY_NAMES))


def _address_list(field: str, value: list[str] | str | None) -> tuple[str, ...]:
    items = split_address_list(value) if isinstance(value, str) else list(value or [])
    return tuple(check_mailbox(field, item) for item in items)


class MessageLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Per-message limits of add-messages (configurable in ``[delivery]``)."""

    max_recipients: int = MAX_RECIPIENTS
    max_headers: int = MAX_HEADERS
    max_attachments: int = MAX_ATTACHMENTS
    max_metadata_bytes: int = MAX_METADATA_BYTES
    #: Nesting depth of ``metadata`` (the only free-form part of a message).
    max_metadata_depth: int = 8


DEFAULT_LIMITS = MessageLimits()


def _deeper_than(value: object, limit: int) -> bool:
    """Whether ``value`` nests dicts and lists deeper than ``limit`` (walked with a stack
    of its own, and only down to the limit: any depth is judged, none recursed into)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_message(raw: object, limits: MessageLimits = DEFAULT_LIMITS) -> MessageSpec:
    """Validate one client message, per the HTTP API (MESSAGE) and return it normalised.

    Raises :class:`InvalidInput` naming the first problem found. Checks that need I/O or
    configuration (tenant, account, attachment sources) belong to the service.
    """
    data = _decode_message(raw)
    check_path_id("id", data.id)
    to, cc, bcc = _checked_recipients(data, limits)
    headers = _checked_headers(data, limits)
    message_id = _normalised_message_id(data.message_id)
    priority = None if data.priority is None else int(parse_priority(data.priority))
    _check_scheduling(data)
    _check_metadata(data.metadata, limits)
    if data.tenant_id is not None and not is_tenant_id(data.tenant_id):
        raise InvalidInput("tenant_id", "invalid tenant_id")
    attachments = data.attachments or []
    if len(attachments) > limits.max_attachments:
        raise InvalidInput(
            "attachments", f"too many attachments: more than {limits.max_attachments}"
        )

    return MessageSpec(
        id=data.id,
        from_=data.from_.strip(),
        to=to,
        cc=cc,
        bcc=bcc,
        subject=data.subject,
        tenant_id=data.tenant_id,
        account_id=data.account_id,
        reply_to=data.reply_to,
        return_path=data.return_path,
        body=data.body,
        content_type=data.content_type,
        body_html=data.body_html,
        headers=headers,
        message_id=message_id,
        attachments=tuple(
            parse_attachment(f"attachments[{i}]", a) for i, a in enumerate(attachments)
        ),
        priority=priority,
        deferred_ts=data.deferred_ts,
        batch_code=data.batch_code,
        metadata=data.metadata,
    )


def _decode_message(raw: object) -> _MessageInput:
    """The message's fields, typed: unknown and missing fields are named first, since
    msgspec's own messages for them are less helpful."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("message", "invalid message: expected an object")
    for key in raw:
        if key not in _MESSAGE_FIELDS:
            raise InvalidInput(str(key), f"unknown field: {key}")
    for key in _REQUIRED_FIELDS:
        value = raw.get(key)
        if value is None or (key != "subject" and value in ("", [])):
            raise InvalidInput(key, f"missing {key}")
    try:
        return msgspec.convert(raw, _MessageInput)
    except msgspec.ValidationError as exc:
        raise convert_error(exc, _MessageInput) from None


def _checked_recipients(
    data: _MessageInput, limits: MessageLimits
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``to``, ``cc`` and ``bcc`` parsed; the sender and reply addresses checked."""
    check_mailbox("from", data.from_)
    to = _address_list("to", data.to)
    if not to:
        raise InvalidInput("to", "missing to")
    cc = _address_list("cc", data.cc)
    bcc = _address_list("bcc", data.bcc)
    if len(to) + len(cc) + len(bcc) > limits.max_recipients:
        raise InvalidInput("to", f"too many recipients: more than {limits.max_recipients}")
    if data.reply_to is not None:
        check_mailbox("reply_to", data.reply_to)
    if data.return_path is not None:
        check_addr_spec("return_path", address_of(data.return_path))
    return to, cc, bcc


def _checked_headers(data: _MessageInput, limits: MessageLimits) -> dict[str, str]:
    check_header_value("subject", data.subject)
    headers = data.headers or {}
    if len(headers) > limits.max_headers:
        raise InvalidInput("headers", f"too many headers: more than {limits.max_headers}")
    for name, value in headers.items():
        check_header_name(name)
        check_header_value(f"headers.{name}", value)
    return dict(headers)


def _normalised_message_id(given: str | None) -> str | None:
    """The client's Message-ID without its angle brackets (they are added when sent)."""
    if given is None:
        return None
    message_id = given.strip().removeprefix("<").removesuffix(">")
    if (
        len(message_id) > MAX_MESSAGE_ID_CHARS
        or not MESSAGE_ID.fullmatch(message_id)
        or hides_control_characters(message_id)
    ):
        raise InvalidInput(
            "message_id",
            f"invalid message_id: expected left@right, at most {MAX_MESSAGE_ID_CHARS}"
            " chars of letters, digits and !#$%&'*+-/=?^_`{|}~.",
        )
    return message_id


def _check_scheduling(data: _MessageInput) -> None:
    if data.deferred_ts is not None and not 0 <= data.deferred_ts <= MAX_TS:
        raise InvalidInput("deferred_ts", f"invalid deferred_ts: 0..{MAX_TS}")
    if data.batch_code is not None and (
        not 0 < len(data.batch_code) <= MAX_BATCH_CODE_CHARS or CONTROL.search(data.batch_code)
    ):
        raise InvalidInput("batch_code", f"invalid batch_code: 1..{MAX_BATCH_CODE_CHARS} chars")


def _check_metadata(metadata: object, limits: MessageLimits) -> None:
    if metadata is None:
        return
    if _deeper_than(metadata, limits.max_metadata_depth):
        raise InvalidInput(
            "metadata", f"invalid metadata: nested deeper than {limits.max_metadata_depth}"
        )
    try:
        size = len(msgspec.json.encode(metadata))
    except UnicodeEncodeError:  # a lone surrogate, from a lenient JSON reader
        raise InvalidInput("metadata", "invalid metadata: text that is not UTF-8") from None
    if size > limits.max_metadata_bytes:
        raise InvalidInput(
            "metadata", f"invalid metadata: larger than {limits.max_metadata_bytes} bytes"
        )


def is_mime_type(value: str) -> bool:
    """``type/subtype``, each an RFC 2045 token: no parameters, nothing that could add one."""
    return bool(_MIME_TYPE.fullmatch(value))


def infer_fetch_mode(storage_path: str) -> Literal["base64", "filesystem", "endpoint", "http_url"]:
    """``base64:`` → base64; ``@`` → endpoint; http(s) URL → http_url; else a file path."""
    if storage_path.startswith("base64:"):
        return "base64"
    if storage_path.startswith("@"):
        return "endpoint"
    if storage_path.lower().startswith(("http://", "https://")):
        return "http_url"
    return "filesystem"


def strip_md5_marker(filename: str) -> tuple[str, str | None]:
    """``report_{MD5:<hex>}.pdf`` → (``report.pdf``, hex); other names are unchanged."""
    match = _MD5_MARKER.search(filename)
    if not match:
        return filename, None
    return filename[: match.start()] + filename[match.end() :], match["hex"].lower()


def decode_inline(storage_path: str) -> bytes:
    """The bytes of a ``base64`` attachment; raises ``binascii.Error`` when malformed."""
    return base64.b64decode(storage_path.removeprefix("base64:"), validate=True)


#: An inline part's Content-ID as ``cid:`` URLs name it (RFC 2392): written between
#: angle brackets into the part's header, so no space, bracket or control character,
#: and no ``=?`` (readers would decode it as an encoded word).
_CONTENT_ID = re.compile(r"[!-;=?-~]{1,250}")


def parse_attachment(field: str, data: _AttachmentInput) -> AttachmentRef:
    # The name is checked as it will be sent, once the MD5 marker is out of it: taking
    # the marker out joins what was around it (``=0{MD5:…}A`` becomes ``=0A``, an
    # encoded line feed), and may leave nothing at all.
    name, marker_md5 = strip_md5_marker(data.filename)
    for form in (data.filename, name):
        if not 0 < len(form) <= 255 or CONTROL.search(form) or hides_control_characters(form):
            raise InvalidInput(
                f"{field}.filename", f"invalid {field}.filename: 1..255 printable chars"
            )
    if "/" in data.filename or "\\" in data.filename:
        raise InvalidInput(f"{field}.filename", f"invalid {field}.filename: no path separators")
    if not data.storage_path or "\x00" in data.storage_path:
        raise InvalidInput(f"{field}.storage_path", f"invalid {field}.storage_path")
    mode = data.fetch_mode or infer_fetch_mode(data.storage_path)
    if data.content_md5 is not None and not _HEX32.fullmatch(data.content_md5):
        raise InvalidInput(f"{field}.content_md5", f"invalid {field}.content_md5: 32 hex digits")
    md5 = (data.content_md5 or marker_md5 or "").lower() or None
    if mode == "base64":
        try:
            content = decode_inline(data.storage_path)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{field}.storage_path", f"invalid base64 in {field}") from None
        if md5 is not None and hashlib.md5(content, usedforsecurity=False).hexdigest() != md5:
            raise InvalidInput(f"{field}.content_md5", f"md5 mismatch in {field}")
    if data.mime_type is not None and not is_mime_type(data.mime_type):
        raise InvalidInput(
            f"{field}.mime_type",
            f"invalid {field}.mime_type: expected type/subtype (RFC 2045 tokens, no parameters)",
        )
    if data.content_id is not None and (
        not _CONTENT_ID.fullmatch(data.content_id) or "=?" in data.content_id
    ):
        raise InvalidInput(
            f"{field}.content_id",
            f"invalid {field}.content_id: 1..250 printable ASCII characters, no spaces or <>",
        )
    return AttachmentRef(
        filename=name,
        storage_path=data.storage_path,
        fetch_mode=mode,
        mime_type=data.mime_type,
        content_md5=md5,
        content_id=data.content_id,
    )
