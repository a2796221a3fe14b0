"""Correlation tokens: how a bounce or complaint finds the message it is about.

A token names a stored message (its store key ``pk``) and, optionally, one of its
envelope recipients, and carries a MAC so that nobody can make one up:

    token = "mp1" + base32(varint(pk) + varint(slot) + HMAC-SHA256(key, data)[:8])

lower-case, without padding; ``slot`` is 0 for the message as a whole and ``i + 1`` for
its ``i``-th envelope recipient; ``data`` binds the token to the message's tenant and
client id as well, so a store key reused after a deletion never matches. A token is 19
characters for a store key below 128 and a slot below 128, at most 34 for a 64-bit key and a
slot below 16384 (``[a-z2-7]``, case-insensitive, fits any local part): a return path
``bounces+{token}@bounce.example`` stays far below the 64 octets of RFC 5321 §4.5.3.1.1.

Where tokens travel:

- the envelope sender (VERP), when the account's ``return_path`` holds ``{token}``: a
  message with one envelope recipient gets a recipient token (slot 1), a message with
  several gets the message token (one SMTP transaction per message, so that a retry
  never reaches a recipient twice; the bounce names the recipient itself, in
  ``Final-Recipient``);
- the header :data:`CORRELATION_HEADER` of every message sent, with the message token:
  a bounce that quotes the original headers maps back even when a relay rewrote the
  envelope sender.

Pure: the key comes in (the store keeps one per database, shared by its processes).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import msgspec

from mailproxy.domain.envelope import envelope_address
from mailproxy.domain.mime import RenderedMessage

#: The header every sent message carries, with its message token.
CORRELATION_HEADER = "X-Mail-Proxy-Ref"
TOKEN_PREFIX = "mp1"
#: A token anywhere in a text (an address, a quoted header), as the parser looks for it.
TOKEN_PATTERN = re.compile(r"(?<![a-z0-9])mp1[a-z2-7]{16,40}(?![a-z0-9])", re.IGNORECASE)
_MAC_BYTES = 8
#: The placeholder of a return path that makes it a VERP address.
TOKEN_PLACEHOLDER = "{token}"


class TokenRef(msgspec.Struct, frozen=True):
    """What a token's structure says, before its MAC is checked against the message."""

    pk: int
    #: 0: the message as a whole; ``i + 1``: its ``i``-th envelope recipient.
    slot: int


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int] | None:
    value = shift = 0
    while at < len(data) and shift <= 63:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return value, at
        shift += 7
    return None


def _mac(key: bytes, head: bytes, tenant_id: str, message_id: str) -> bytes:
    data = head + b"\0" + tenant_id.encode() + b"\0" + message_id.encode()
    return hmac.new(key, data, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(key: bytes, *, pk: int, slot: int, tenant_id: str, message_id: str) -> str:
    """The token of message ``pk`` (tenant ``tenant_id``, client id ``message_id``) and
    ``slot`` (0: the message; ``i + 1``: its ``i``-th recipient)."""
    head = _varint(pk) + _varint(slot)
    raw = head + _mac(key, head, tenant_id, message_id)
    return TOKEN_PREFIX + base64.b32encode(raw).decode().rstrip("=").lower()


def read_token(token: str) -> TokenRef | None:
    """The message and slot a token names, or None when it is not a token. The MAC is
    not checked here: :func:`token_matches` does that once the message is known."""
    if not token.lower().startswith(TOKEN_PREFIX):
        return None
    body = token[len(TOKEN_PREFIX) :].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        return None
    pk_at = _read_varint(raw, 0)
    if pk_at is None:
        return None
    slot_at = _read_varint(raw, pk_at[1])
    if slot_at is None or len(raw) - slot_at[1] != _MAC_BYTES:
        return None
    return TokenRef(pk=pk_at[0], slot=slot_at[0])


def token_matches(key: bytes, token: str, *, tenant_id: str, message_id: str) -> bool:
    """Whether ``token`` was made with ``key`` for the message it names, which belongs to
    ``tenant_id`` with the client id ``message_id`` (constant-time comparison)."""
    ref = read_token(token)
    if ref is None:
        return False
    expected = make_token(key, pk=ref.pk, slot=ref.slot, tenant_id=tenant_id, message_id=message_id)
    return hmac.compare_digest(expected, token.lower())


def find_tokens(text: str) -> list[str]:
    """The token-shaped words of ``text``, lower-cased, first occurrence first."""
    return list(dict.fromkeys(match.lower() for match in TOKEN_PATTERN.findall(text)))


def envelope_sender(return_path: str, token: str) -> str:
    """The envelope sender for a message: ``return_path`` with its ``{token}`` replaced
    (unchanged when it has none)."""
    return return_path.replace(TOKEN_PLACEHOLDER, token)


def correlated(
    rendered: RenderedMessage,
    key: bytes,
    *,
    pk: int,
    tenant_id: str,
    message_id: str,
    return_path: str | None,
) -> RenderedMessage:
    """``rendered`` as it goes out: with the :data:`CORRELATION_HEADER` line first, and,
    when ``return_path`` is given (the account's, for a message that names none of its
    own), that envelope sender, its ``{token}`` replaced by the recipient token of a
    message with one envelope recipient, by the message token otherwise."""
    message_token = make_token(key, pk=pk, slot=0, tenant_id=tenant_id, message_id=message_id)
    header = f"{CORRELATION_HEADER}: {message_token}\r\n".encode()
    sender = rendered.sender
    if return_path:
        token = message_token
        if len(rendered.recipients) == 1:
            token = make_token(key, pk=pk, slot=1, tenant_id=tenant_id, message_id=message_id)
        sender = envelope_address(envelope_sender(return_path, token))
    return msgspec.structs.replace(rendered, sender=sender, content=header + rendered.content)
