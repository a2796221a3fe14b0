"""The structural checks of a rendered message: its header block, and each attachment
part's headers, are exactly what the renderer meant to write (nothing a client smuggled
in through a value, a file name or a content type)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from mailproxy.domain.errors import InvalidInput

#: A header line starts with a field name (printable ASCII but ":") and a colon, RFC 5322
#: §2.2; "Bcc : x" is not one (and must not pass for something else).
_HEADER_LINE = re.compile(rb"([!-9;-~]+):")
#: RFC 5322 §2.1.1, without the CRLF.
MAX_LINE_OCTETS = 998


def check_header_block(
    content: bytes, expected: Iterable[str], *, final_line: bytes | None = None
) -> None:
    """Refuse a serialised header block that is not exactly the ``expected`` headers
    (lower-case names, one entry per header, any order): a bare CR or LF, a line that is
    neither a header nor a fold, a line over 998 octets, a header missing, added or
    repeated, or, when ``final_line`` is given, a block that does not end with it (a body
    that starts earlier than ours)."""
    end = content.find(b"\r\n\r\n")
    if end < 0:
        raise InvalidInput("headers", "unsafe headers: no end to the header block")
    head = content[:end]
    names = _header_names(head)
    found, wanted = Counter(names), Counter(expected)
    if found != wanted:
        extra, missing = sorted((found - wanted).elements()), sorted((wanted - found).elements())
        raise InvalidInput("headers", f"unsafe headers: unexpected {extra}, missing {missing}")
    if final_line is not None and not head.endswith(b"\r\n" + final_line):
        raise InvalidInput("headers", "unsafe headers: the body starts before the last header")


def _header_names(head: bytes) -> list[str]:
    """The field names of a header block (CRLF line ends, no blank line), in order."""
    if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
        raise InvalidInput("headers", "unsafe headers: bare line break in the serialised header")
    names: list[str] = []
    for line in head.split(b"\r\n"):
        if len(line) > MAX_LINE_OCTETS:
            raise InvalidInput("headers", f"unsafe headers: a line over {MAX_LINE_OCTETS} octets")
        if line[:1] in (b" ", b"\t") and names:
            continue  # a fold of the header before
        match = _HEADER_LINE.match(line)
        if match is None:
            raise InvalidInput("headers", f"unsafe headers: not a header line: {line[:40]!r}")
        names.append(match[1].decode("ascii").lower())
    return names


def check_part_headers(content: bytes, stand_in_line: bytes, expected: list[str]) -> None:
    """An attachment part, whose headers (content type and file name) come from the
    client too: its body must start with the stand-in, right after exactly ``expected``
    headers, the last of them ``MIME-Version`` when the renderer writes one there."""
    at = content.find(b"\r\n\r\n" + stand_in_line)
    boundary = content.rfind(b"\r\n--", 0, at)
    if at < 0 or boundary < 0:
        raise InvalidInput("attachments", "unsafe headers: an attachment part is malformed")
    start = content.index(b"\r\n", boundary + 2) + 2
    names = _header_names(content[start:at])
    if Counter(names) != Counter(expected):
        raise InvalidInput("attachments", f"unsafe headers: attachment part with {names}")
