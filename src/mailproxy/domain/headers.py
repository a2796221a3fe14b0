"""Header names and values a client gives: refused when they hold a control character,
say one they may not set, or hide a control character in an RFC 2047 encoded word.

Python 3.11/3.12's ``email`` package can be tricked into writing a decoded newline into
the serialised header block (CVE-2024-6923), so encoded words are decoded here as leniently
as any decoder on the way might, before anything is queued; the renderer checks the header
block it wrote once more (:func:`mailproxy.domain.header_checks.check_header_block`).
"""

from __future__ import annotations

import binascii
import re

from mailproxy.domain.errors import InvalidInput

MAX_HEADER_VALUE_CHARS = 8192

#: Headers a client may not set through ``headers``: they define the envelope or the MIME
#: structure, or are added by relays (HTTP API).
FORBIDDEN_HEADERS = frozenset(
    name.lower()
    for name in (
        "From",
        "To",
        "Cc",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "Sender",
        "Return-Path",
        "Reply-To",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Received",
        "DKIM-Signature",
    )
)

# C0 and C1 controls except TAB, and the Unicode line separators that str.splitlines()
# (and so parts of the email package) treat as line breaks.
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z|~]{1,76}")
# Every start of an encoded word (a lookahead, so overlapping candidates are all found);
# the text may hold spaces and "?", as lenient decoders accept (see hides_control_characters).
# The closing "?=" may be missing: the email package's header parser decodes a word that
# runs to the end of the value all the same.
_ENCODED_WORD = re.compile(r"(?==\?([^?]*)\?([bBqQ])\?(.*?)(?:\?=|\Z))", re.DOTALL)
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")
_RAW_BREAK = re.compile(rb"[\x00\r\n]")


def check_header_value(field: str, value: str) -> str:
    """Refuse control characters, values that cannot be folded, and encoded words whose
    decoded form holds a control character.

    Header values with CR or LF are rejected, never folded. Encoded words are checked
    because Python 3.11/3.12's ``email`` package can be tricked into writing a decoded
    newline into the serialised header block (CVE-2024-6923); see
    :func:`hides_control_characters` for how leniently they are decoded.
    """
    if CONTROL.search(value):
        raise InvalidInput(field, f"invalid {field}: control characters (CR, LF, NUL) not allowed")
    if len(value) > MAX_HEADER_VALUE_CHARS:
        raise InvalidInput(field, f"invalid {field}: longer than {MAX_HEADER_VALUE_CHARS} chars")
    if hides_control_characters(value):
        raise InvalidInput(field, f"invalid {field}: encoded word hides control characters")
    return value


def hides_control_characters(value: str, depth: int = 3) -> bool:
    """Whether some RFC 2047 encoded word in ``value`` decodes to a control character.

    Decoded as leniently as any decoder on the way might: the email package's header
    parser takes encoded text with spaces and ``?`` in it, ``email.header.decode_header``
    joins adjacent words of one charset before decoding them, an unknown charset falls
    back to the raw bytes, and a word left open at the end of the value is decoded too.
    So every ``=?charset?b|q?...?=`` candidate counts,
    overlapping ones too, its bytes are checked as they are and as its charset decodes
    them, and what decodes to another encoded word is decoded again.
    """
    if "=?" not in value:  # the common case, at a fraction of the cost of the search
        return False
    words = [m.groups() for m in _ENCODED_WORD.finditer(value)]
    decoded: list[str] = []
    by_charset: dict[str, bytearray] = {}
    for charset, encoding, text in words:
        charset = charset.partition("*")[0].strip().lower()
        for raw in _lenient_payloads(encoding, text):
            # Raw, only the line breaks and NUL: other control bytes are legitimate in
            # some charsets (ESC in ISO-2022-JP), and the decoded text is checked fully.
            if _RAW_BREAK.search(raw):
                return True
            by_charset.setdefault(charset, bytearray()).extend(raw)
            decoded += _decode_as(raw, charset)
    for charset, joined in by_charset.items():
        decoded += _decode_as(bytes(joined), charset)
    if any(CONTROL.search(text) for text in decoded):
        return True
    return depth > 0 and any(hides_control_characters(text, depth - 1) for text in decoded)


def _lenient_payloads(encoding: str, text: str) -> list[bytes]:
    raw = text.encode("utf-8", "surrogatepass")
    if encoding in "qQ":
        return [_Q_ESCAPE.sub(lambda m: bytes.fromhex(m[1].decode()), raw.replace(b"_", b" "))]
    # Base64 decoders skip characters outside the alphabet, and some stop at the first
    # padding: decode the whole and each run between paddings.
    runs = [_NOT_BASE64.sub(b"", run) for run in [raw.replace(b"=", b""), *raw.split(b"=")]]
    payloads = []
    for run in runs:
        run = run[: len(run) - len(run) % 4] if len(run) % 4 == 1 else run
        payloads.append(binascii.a2b_base64(run + b"=" * (-len(run) % 4)))
    return payloads


def _decode_as(raw: bytes, charset: str) -> list[str]:
    try:
        return [raw.decode(charset or "ascii", "replace")]
    except (LookupError, UnicodeError, ValueError):
        return []  # an unknown charset: decoders keep the raw bytes, checked as they are


def check_header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise InvalidInput("headers", f"invalid header name: {name!r}")
    if name.lower() in FORBIDDEN_HEADERS:
        raise InvalidInput("headers", f"header not allowed: {name} (use the message fields)")
    # RFC 2045 §9: Content-* headers describe the MIME structure, which the service builds
    # (the SMTPUTF8 renderer drops them, the other one would contradict its own).
    if name.lower().startswith("content-"):
        raise InvalidInput("headers", f"header not allowed: {name} (the MIME structure is set)")
    return name
