"""What a message of the bounce mailbox says: :func:`parse_report` reads one raw message
into a :class:`~mailproxy.domain.bounces.ParsedReport`.

Recognised in this order (the first that applies decides the kind):

1. ``dsn``: an RFC 3464 delivery status notification (``multipart/report;
   report-type=delivery-status`` with a ``message/delivery-status`` part). Per recipient:
   ``Action: failed`` is a bounce (hard for a ``5.x.x`` status or none, soft for
   ``4.x.x``), ``delayed`` a delay, ``delivered`` / ``relayed`` / ``expanded`` nothing.
2. ``arf``: an RFC 5965 feedback report (``report-type=feedback-report``): one complaint
   per ``Original-Rcpt-To``, else about the ``To`` of the quoted original; none for a
   ``not-spam`` or ``auth-failure`` report, which complain about nothing.
3. ``heuristic``: a bounce in one of the non-standard formats flufl.bounce knows (Exim,
   qmail, ...), when that optional package is installed; its temporary failures are soft
   bounces, its permanent ones hard.
4. ``auto_reply``: an RFC 3834 automatic response or an out-of-office reply. Checked
   after the reports, since real DSNs say ``Auto-Submitted: auto-replied`` too.
5. ``unparsed``: anything else, left for people.

Whatever the kind, ``tokens`` holds the correlation tokens found: in the addresses the
report was delivered to (``Delivered-To``, ``X-Original-To``, ``Envelope-To``,
``X-Envelope-To``, ``To``: the VERP return path), then in the quoted original's
:data:`~mailproxy.domain.correlation.CORRELATION_HEADER` (a ``message/rfc822`` or
``text/rfc822-headers`` part, or such a line in a text part), then in the DSN's
``Original-Envelope-Id``.

Never raises: broken MIME, unknown charsets and garbage give ``unparsed`` with a summary.
A hostile mailbox cannot make it slow: only the first :data:`MAX_REPORT_BYTES` of a
message, its first :data:`MAX_PARTS` MIME parts and :data:`MAX_RECIPIENT_GROUPS` groups of
a status report are read. Pure: no I/O.
"""

from __future__ import annotations

import email
import email.parser
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from email.header import decode_header, make_header
from email.message import Message
from email.policy import Compat32
from email.utils import getaddresses

from mailproxy.domain.bounces import (
    BounceFact,
    BounceType,
    ComplaintFact,
    DelayFact,
    ParsedReport,
    enhanced_status,
)
from mailproxy.domain.correlation import CORRELATION_HEADER, TOKEN_PATTERN, find_tokens

MAX_REPORT_BYTES = 2 * 1024 * 1024
MAX_PARTS = 50
MAX_RECIPIENT_GROUPS = 1000
MAX_SUMMARY_CHARS = 200
_MAX_SUBJECT_CHARS = 100

#: The report's own headers that name where it was delivered: a VERP return path shows
#: here. ``Return-Path`` is the report's own (empty) sender, so it is not among them.
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
#: A quoted original pasted as text (Exim, qmail and others quote it in the body).
_QUOTED_REF_LINE = re.compile(
    rf"^[ \t>]*{re.escape(CORRELATION_HEADER)}[ \t]*:(.*)$", re.IGNORECASE | re.MULTILINE
)
#: Subjects that are clearly automatic replies (RFC 3834 asks for ``Auto-Submitted``, but
#: many responders only say so in the subject).
_AUTO_REPLY_SUBJECT = re.compile(
    r"out of (the )?office|automatic reply|auto[- ]?reply|autoresponse|^\s*auto:"
    r"|abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique",
    re.IGNORECASE,
)
_WHITESPACE = re.compile(r"\s+")
_QUOTED_ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/global-headers")
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_FEEDBACK_TYPE = "message/feedback-report"
#: Feedback types that are no complaint about the message: a user taking it out of the
#: spam folder (``not-spam``, RFC 6430) and an authentication failure report (RFC 6591).
_NOT_COMPLAINTS = frozenset({"not-spam", "auth-failure"})

Fields = list[tuple[str, str]]


class _TextHeaders(Compat32):
    """compat32 whose headers are always ``str``: compat32 gives an ``email.header.Header``
    for a value with raw 8-bit bytes, which flufl.bounce's detectors (``.lower()``) and
    this module would trip over; such bytes are read as UTF-8 instead."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        try:
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeError:
            return value.encode("utf-8", "replace").decode("utf-8")


_LENIENT = _TextHeaders()


def parse_report(raw: bytes) -> ParsedReport:
    """The kind, facts and correlation tokens of the raw message ``raw`` (see the module
    docstring). Never raises: what cannot be read is ``kind="unparsed"``."""
    try:
        return _parse(raw[:MAX_REPORT_BYTES])
    except Exception as exc:  # a parser bug must not stop the mailbox poller
        return ParsedReport(kind="unparsed", summary=f"unreadable message ({type(exc).__name__})")


def _parse(raw: bytes) -> ParsedReport:
    # compat32 never raises on access (the default policy's header objects do on some
    # broken headers), and this parser must read whatever a mailbox holds.
    msg = email.message_from_bytes(raw, policy=_LENIENT)
    parts = list(itertools.islice(msg.walk(), MAX_PARTS + 1))
    subject = _subject(msg)
    quoted = [p for p in parts[:MAX_PARTS] if p.get_content_type() in _QUOTED_ORIGINAL_TYPES]
    original = _original_headers(quoted[0]) if quoted else None
    message_id = (_header(original, "Message-ID").strip() or None) if original is not None else None
    found = _recipient_tokens(msg) + _quoted_tokens(parts[:MAX_PARTS], quoted)

    report_type = msg.get_param("report-type", header="content-type")
    report_type = report_type.lower() if isinstance(report_type, str) else ""
    if msg.get_content_type() == "multipart/report":
        subparts = _subparts(msg)
        status = _status_part(subparts, report_type)
        if status is not None:
            return _dsn(subject, status, found, message_id)
        feedback = next((p for p in subparts if p.get_content_type() == _FEEDBACK_TYPE), None)
        if feedback is None and report_type == "feedback-report" and len(subparts) > 1:
            feedback = subparts[1]
        if feedback is not None:
            return _arf(subject, feedback, original, found, message_id)

    tokens = _unique(found)
    # flufl.bounce walks every part, so a message beyond the cap is not given to it.
    if len(parts) <= MAX_PARTS:
        bounces = _heuristic_bounces(msg)
        if bounces:
            hard = sum(b.type == "hard" for b in bounces)
            return ParsedReport(
                kind="heuristic",
                bounces=bounces,
                tokens=tokens,
                original_message_id=message_id,
                summary=_clip(
                    f"{subject}: non-standard bounce, "
                    f"{hard} hard and {len(bounces) - hard} soft failure(s)"
                ),
            )
    if _is_auto_reply(msg, subject):
        return ParsedReport(
            kind="auto_reply",
            tokens=tokens,
            original_message_id=message_id,
            summary=_clip(f"{subject}: automatic reply"),
        )
    return ParsedReport(
        kind="unparsed",
        tokens=tokens,
        original_message_id=message_id,
        summary=_clip(
            f"{subject}: not a delivery status notification, feedback report or known bounce format"
        ),
    )


# --- RFC 3464 delivery status notifications -------------------------------------------


def _status_part(subparts: Sequence[Message], report_type: str) -> Message | None:
    found = next((p for p in subparts if p.get_content_type() in _STATUS_TYPES), None)
    if (
        found is None
        and report_type == "delivery-status"
        and len(subparts) > 1
        and subparts[1].get_content_maintype() == "text"
    ):
        # Some MTAs label the status part text/plain; it is the second part (RFC 3462).
        return subparts[1]
    return found


def _dsn(subject: str, status: Message, found: list[str], message_id: str | None) -> ParsedReport:
    bounces: list[BounceFact] = []
    delays: list[DelayFact] = []
    envelope_tokens: list[str] = []
    for fields in _field_groups(status):
        envelope_id = _field(fields, "Original-Envelope-Id")
        # Only an envelope id that is a token as a whole: a client's own ENVID may hold
        # anything, a token-shaped word inside it included.
        if TOKEN_PATTERN.fullmatch(envelope_id):
            envelope_tokens.append(envelope_id.lower())
        recipient = _recipient(fields)
        action = _field(fields, "Action").lower().split("(")[0].strip()
        if recipient is None or action not in ("failed", "delayed"):
            continue
        code = _status_code(_field(fields, "Status"))
        diagnostic = _diagnostic(_field(fields, "Diagnostic-Code"))
        if action == "failed":
            kind: BounceType = "soft" if code is not None and code.startswith("4") else "hard"
            bounces.append(
                BounceFact(
                    recipient=recipient,
                    type=kind,
                    status=code,
                    diagnostic=diagnostic,
                    source="dsn",
                )
            )
        else:
            delays.append(DelayFact(recipient=recipient, status=code, diagnostic=diagnostic))
    hard = sum(b.type == "hard" for b in bounces)
    return ParsedReport(
        kind="dsn",
        bounces=tuple(bounces),
        delays=tuple(delays),
        tokens=_unique(found + envelope_tokens),
        original_message_id=message_id,
        summary=_clip(
            f"{subject}: delivery status notification, {hard} hard and "
            f"{len(bounces) - hard} soft bounce(s), {len(delays)} delay(s)"
        ),
    )


def _recipient(fields: Fields) -> str | None:
    """``Original-Recipient`` (else ``Final-Recipient``) without its address type:
    ``rfc822; jane@example.com`` → ``jane@example.com``. The original comes first: it is
    the address the message was sent to, where the final one may be where an alias or
    a forward led (RFC 3464 §2.3.1, §2.3.2)."""
    for name in ("Original-Recipient", "Final-Recipient"):
        value = _field(fields, name)
        address = value.split(";", 1)[1] if ";" in value else value
        address = address.strip().strip("<>").strip()
        if address:
            return address
    return None


def _status_code(value: str) -> str | None:
    # "5.1.1 (bad destination mailbox)": RFC 3464 §2.3.4 allows a comment after the code.
    return enhanced_status(value.split("(")[0]) if value else None


def _diagnostic(value: str) -> str | None:
    """The text of a ``Diagnostic-Code`` after its type (``smtp; 550 5.1.1 No such
    user`` → ``550 5.1.1 No such user``), unfolded."""
    text = value.split(";", 1)[1] if ";" in value else value
    text = _WHITESPACE.sub(" ", text).strip()
    return text or None


# --- RFC 5965 feedback reports --------------------------------------------------------


def _arf(
    subject: str,
    feedback: Message,
    original: Message | None,
    found: list[str],
    message_id: str | None,
) -> ParsedReport:
    fields = [pair for group in _field_groups(feedback) for pair in group]
    feedback_type = _field(fields, "Feedback-Type").lower() or "abuse"
    recipients = _unique(
        value.strip().strip("<>").strip()
        for name, value in fields
        if name.lower() == "original-rcpt-to" and value.strip().strip("<>").strip()
    )
    if not recipients and original is not None:
        addresses = [addr for _, addr in getaddresses([_header(original, "To")]) if addr]
        recipients = tuple(addresses[:1])
    complaints = tuple(
        ComplaintFact(recipient=recipient, feedback_type=feedback_type)
        for recipient in recipients or (None,)
        if feedback_type not in _NOT_COMPLAINTS
    )
    return ParsedReport(
        kind="arf",
        complaints=complaints,
        tokens=_unique(found),
        original_message_id=message_id,
        summary=_clip(
            f"{subject}: feedback report ({feedback_type}), {len(complaints)} complaint(s)"
        ),
    )


# --- non-standard bounces and automatic replies -----------------------------------------


def _heuristic_bounces(msg: Message) -> tuple[BounceFact, ...]:
    if not any(address for _, address in getaddresses(_all_headers(msg, "From"))):
        # Every bounce names its sender (MAILER-DAEMON, postmaster); some detectors raise
        # (and log the traceback) on a message without one.
        return ()
    try:
        from flufl.bounce import all_failures
    except ImportError:  # the optional "bounces" extra is not installed
        return ()
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector that trips over a broken message finds nothing
        return ()
    found: dict[str, BounceFact] = {}
    kinds: tuple[tuple[frozenset[bytes], BounceType], ...] = (
        (permanent, "hard"),
        (temporary, "soft"),
    )
    for addresses, kind in kinds:
        for address in sorted(addresses):
            recipient = address.decode("ascii", "replace").strip()
            if recipient and recipient not in found:
                found[recipient] = BounceFact(recipient=recipient, type=kind, source="heuristic")
    return tuple(found.values())


def _is_auto_reply(msg: Message, subject: str) -> bool:
    auto_submitted = _header(msg, "Auto-Submitted").split(";")[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return True
    if msg.get("X-Autoreply") is not None or msg.get("X-Autorespond") is not None:
        return True
    if _header(msg, "Precedence").strip().lower() == "auto_reply":
        return True
    return _AUTO_REPLY_SUBJECT.search(subject) is not None


# --- tokens and the quoted original ---------------------------------------------------


def _recipient_tokens(msg: Message) -> list[str]:
    return [
        token
        for name in _RECIPIENT_HEADERS
        for value in _all_headers(msg, name)
        for token in find_tokens(value)
    ]


def _quoted_tokens(parts: Sequence[Message], quoted: Sequence[Message]) -> list[str]:
    tokens: list[str] = []
    for part in quoted:
        headers = _original_headers(part)
        if headers is not None:
            for value in _all_headers(headers, CORRELATION_HEADER):
                tokens += find_tokens(value)
    for part in parts:
        if part.get_content_maintype() == "text" and all(part is not q for q in quoted):
            for match in _QUOTED_REF_LINE.finditer(_body_text(part)):
                tokens += find_tokens(match.group(1))
    return tokens


def _original_headers(part: Message) -> Message | None:
    """The headers of the original a ``message/rfc822`` or ``text/rfc822-headers`` part
    quotes."""
    payload = part.get_payload()
    if isinstance(payload, list):
        first = payload[0] if payload else None
        return first if isinstance(first, Message) else None
    return email.parser.HeaderParser(policy=_LENIENT).parsestr(_body_text(part))


# --- reading MIME leniently -----------------------------------------------------------


def _subparts(msg: Message) -> list[Message]:
    payload = msg.get_payload()
    if not isinstance(payload, list):
        return []
    return [p for p in payload[:MAX_PARTS] if isinstance(p, Message)]


def _field_groups(part: Message) -> Iterator[Fields]:
    """The field groups of a status or feedback part, at most
    :data:`MAX_RECIPIENT_GROUPS`: the email package parses ``message/delivery-status``
    into one Message per group, other ``message/*`` into one Message whose body holds any
    further groups, and leaves a part labelled ``text/*`` as text."""
    return itertools.islice(_all_field_groups(part), MAX_RECIPIENT_GROUPS)


def _all_field_groups(part: Message) -> Iterator[Fields]:
    payload = part.get_payload()
    if isinstance(payload, list):
        for block in payload:
            if not isinstance(block, Message):
                continue
            yield [(name, _text(value)) for name, value in block.items()]
            body = block.get_payload()
            if isinstance(body, str) and body.strip():
                yield from _text_field_groups(body)
    else:
        yield from _text_field_groups(_body_text(part))


def _text_field_groups(text: str) -> Iterator[Fields]:
    parser = email.parser.HeaderParser(policy=_LENIENT)
    for block in re.split(r"\r?\n[ \t]*\r?\n", text):
        if block.strip():
            group = parser.parsestr(block.strip() + "\n")
            yield [(name, _text(value)) for name, value in group.items()]


def _body_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def _field(fields: Fields, name: str) -> str:
    lowered = name.lower()
    return next((value.strip() for key, value in fields if key.lower() == lowered), "")


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    return "" if value is None else _text(value)


def _all_headers(msg: Message, name: str) -> list[str]:
    return [_text(value) for value in msg.get_all(name) or []]


def _text(value: object) -> str:
    """A header value as text, RFC 2047 words decoded (kept as they are when undecodable)."""
    try:
        return str(make_header(decode_header(str(value))))
    except Exception:  # an encoded word in an unknown charset, broken base64, ...
        return str(value)


def _subject(msg: Message) -> str:
    subject = _WHITESPACE.sub(" ", _header(msg, "Subject")).strip() or "(no subject)"
    if len(subject) > _MAX_SUBJECT_CHARS:
        subject = subject[: _MAX_SUBJECT_CHARS - 1] + "…"
    return subject


def _clip(text: str) -> str:
    return text if len(text) <= MAX_SUMMARY_CHARS else text[: MAX_SUMMARY_CHARS - 1] + "…"


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
