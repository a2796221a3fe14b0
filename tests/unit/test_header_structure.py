"""The rendered header block, checked structurally in both renderers (the classic one for
ASCII addresses, the SMTPUTF8 one as soon as one local part is not ASCII): exactly the
headers the message asks for, no line over 998 octets, the body where we put it, and
nothing raw in a body that its transfer encoding may not carry."""

from __future__ import annotations

import email
import email.policy
import sys
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.header_checks import check_header_block
from mailproxy.domain.mime import (
    AttachmentContent,
    RenderedMessage,
    expected_headers,
    render,
)
from mailproxy.domain.model import MessageSpec
from mailproxy.domain.validation import parse_message

#: The Bcc that sends a message through each renderer: ASCII (classic) or a UTF-8 local
#: part (SMTPUTF8, the one Python 3.11/3.12 can be tricked through, CVE-2024-6923).
RENDERERS = {"classic": (), "smtputf8": ("ü@example.org",)}
SPACED_INJECTION = "=?utf-8?q?a=0D=0AFrom:_Billing_<billing@bank.example>=0D=0A=0D=0Afake ?="
BCC_INJECTIONS = [
    SPACED_INJECTION,
    "=?utf-8?q?x=0D=0ABcc_:_leak@evil.example?=",
    "=?utf-8?q?x=0D=0ABcc : leak@evil.example ?=",
    "=?utf-8?q?x=0D=0A=0D=0Aforged_body ?=",
    "=?utf-8?b?eA0KQmNjIDogbGVha0BldmlsLmV4YW1wbGU=?=",  # x CRLF "Bcc : leak@..."
]
BODY = "the real body"


def spec_of(bcc: tuple[str, ...], **fields: object) -> MessageSpec:
    """A message built past validation, to prove the rendering holds on its own."""
    base: dict[str, object] = {"id": "m", "from_": "s@example.com", "to": ("r@example.com",),
                               "subject": "s", "body": BODY, "bcc": bcc}  # fmt: skip
    return MessageSpec(**(base | fields))  # type: ignore[arg-type]


def head_of(out: RenderedMessage) -> bytes:
    return out.content.split(b"\r\n\r\n", 1)[0]


def names_in(out: RenderedMessage) -> Counter[str]:
    lines = head_of(out).split(b"\r\n")
    heads = [line for line in lines if line[:1] not in (b" ", b"\t")]
    return Counter(line.split(b":", 1)[0].lower().decode() for line in heads)


def render_or_refusal(
    spec: MessageSpec, attachments: tuple[AttachmentContent, ...] = ()
) -> RenderedMessage | InvalidInput:
    try:
        return render(spec, message_id="id@example.com", date_ts=0, attachments=attachments)
    except InvalidInput as refused:
        return refused


def assert_refused_or_intact(spec: MessageSpec) -> None:
    """Either the message is refused before sending, or what goes out has exactly the
    headers asked for, no Bcc, and our body."""
    out = render_or_refusal(spec)
    if isinstance(out, InvalidInput):
        # The header check, or for a mailbox the validation that rendering repeats.
        assert out.reason.startswith(("unsafe headers", "invalid ")), out.reason
        return
    assert names_in(out) == Counter(expected_headers(spec, ())), head_of(out)
    assert b"leak@evil.example" not in head_of(out).replace(b"\r\n ", b" ").split(b"=?")[0]
    parsed = email.message_from_bytes(out.content, policy=email.policy.default)
    assert parsed["Bcc"] is None
    assert parsed.get_content().strip() == BODY


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("value", BCC_INJECTIONS)
def test_a_header_value_that_decodes_to_headers_is_refused_or_goes_out_as_text(renderer, value):
    bcc = RENDERERS[renderer]
    assert_refused_or_intact(spec_of(bcc, headers={"X-Note": value}))
    assert_refused_or_intact(spec_of(bcc, subject=value))
    assert_refused_or_intact(spec_of(bcc, from_=f"{value} <s@example.com>"))


def test_the_spaced_encoded_word_is_refused_by_the_smtputf8_renderer_on_this_python():
    # On a Python with the CVE-2024-6923 fix the package encodes the newline and the
    # message goes out intact (checked above); here it decodes it, and the check refuses.
    out = render_or_refusal(spec_of(RENDERERS["smtputf8"], headers={"X-Note": SPACED_INJECTION}))
    if sys.version_info < (3, 11, 10):
        assert isinstance(out, InvalidInput)
        assert out.reason == "unsafe headers: unexpected ['from'], missing " + str(
            sorted(["content-transfer-encoding", "content-type", "mime-version"])
        )
    else:
        assert isinstance(out, RenderedMessage)
        assert names_in(out)["from"] == 1


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"From: a\r\nBcc : leak@evil.example\r\nMIME-Version: 1.0", "not a header line"),
        (b"From: a\r\nFrom: b\r\nMIME-Version: 1.0", "unexpected ['from']"),
        (b"From: a", "missing ['mime-version']"),
        (b"From: a\r\nMIME-Version: 1.0\r\nX-Late: 1", "unexpected ['x-late']"),
        (b" folded first\r\nFrom: a\r\nMIME-Version: 1.0", "not a header line"),
        (b"From: a\r\n: no name\r\nMIME-Version: 1.0", "not a header line"),
        (b"From: a\nBcc: b\r\nMIME-Version: 1.0", "bare line break"),
        (b"From: a\rBcc: b\r\nMIME-Version: 1.0", "bare line break"),
        (b"From: " + b"a" * 993 + b"\r\nMIME-Version: 1.0", "over 998 octets"),
        (b"MIME-Version: 1.0\r\nFrom: a", "the body starts before the last header"),
    ],
)
def test_the_header_block_check_is_structural(head, why):
    with pytest.raises(InvalidInput) as caught:
        check_header_block(
            head + b"\r\n\r\nbody", ["from", "mime-version"], final_line=b"MIME-Version: 1.0"
        )
    assert why in caught.value.reason, caught.value.reason


def test_the_header_block_check_accepts_folds_and_any_order():
    check_header_block(
        b"From: a\r\n folded\r\n\tagain\r\nMIME-Version: 1.0\r\n\r\nbody",
        ["mime-version", "from"],
        final_line=b"MIME-Version: 1.0",
    )


def test_a_body_smuggled_into_the_last_custom_header_is_refused():
    # Custom headers are the last ones the classic renderer writes but one: a blank line in
    # one of them would start the body early, and cuts off the MIME-Version after it.
    content = b"From: a\r\nX-Note: v\r\n\r\nforged body\r\nMIME-Version: 1.0\r\n\r\nreal body\r\n"
    with pytest.raises(InvalidInput, match="missing \\['mime-version'\\]"):
        check_header_block(content, ["from", "x-note", "mime-version"])


@pytest.mark.parametrize("renderer", RENDERERS)
def test_an_attachment_part_with_an_injected_header_is_refused(renderer):
    spec = spec_of(RENDERERS[renderer])
    out = render_or_refusal(spec, (AttachmentContent("=?utf-8?q?a=0D=0AX-Evil:_1?=.txt", b"x"),))
    if isinstance(out, InvalidInput):
        assert "attachment part" in out.reason
    else:
        assert b"\r\nX-Evil:" not in out.content


@pytest.mark.parametrize("renderer", RENDERERS)
def test_an_attachment_type_with_parameters_is_refused_when_rendering(renderer):
    attachment = AttachmentContent("a.txt", b"data", 'text/plain; name="evil.exe"')
    with pytest.raises(InvalidInput, match="invalid attachment mime_type"):
        render(spec_of(RENDERERS[renderer]), message_id="i@e.com", date_ts=0,
               attachments=[attachment])  # fmt: skip


# --- line length (RFC 5322 §2.1.1) -------------------------------------------------------

LONG_VALUES = {
    "ascii word": "a" * 2000,
    "ascii words": " ".join(["word"] * 1000),
    "non-ascii word": "ü" * 2000,
    "non-ascii words": " ".join(["üüü"] * 1000),
    "a word just over the plain limit": "x" * 950 + " y",
    "a long URL": "<https://example.com/" + "a" * 1500 + ">",
    "mixed": "x" * 500 + "ü" + "y" * 600,
    "emoji": "🎉" * 1000,
}


def rendered(renderer: str, **fields: object) -> tuple[RenderedMessage, email.message.Message]:
    raw = {"id": "m", "from": "s@example.com", "to": ["r@example.com"], "subject": "s",
           "body": BODY, "bcc": list(RENDERERS[renderer])} | fields  # fmt: skip
    out = render(parse_message(raw), message_id="id@example.com", date_ts=0)
    return out, email.message_from_bytes(out.content, policy=email.policy.default)


def longest_line(out: RenderedMessage) -> int:
    return max(len(line) for line in out.content.split(b"\r\n"))


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("name", LONG_VALUES)
def test_long_subjects_and_header_values_fold_within_998_octets_and_decode_intact(renderer, name):
    value = LONG_VALUES[name]
    out, msg = rendered(renderer, subject=value, headers={"X-Long-Header": value})
    assert longest_line(out) <= 998
    assert str(msg["Subject"]) == value
    assert str(msg["X-Long-Header"]) == value


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("filename", ["🎉" * 250, "ü" * 255, "x" * 255, 'a b;c"dü' * 30])
def test_long_attachment_names_fold_within_998_octets_and_decode_intact(renderer, filename):
    spec = spec_of(RENDERERS[renderer])
    files = [AttachmentContent(filename, b"one"), AttachmentContent(filename, b"two")]
    out = render(spec, message_id="id@example.com", date_ts=0, attachments=files)
    assert longest_line(out) <= 998
    parsed = email.message_from_bytes(out.content, policy=email.policy.default)
    assert [part.get_filename() for part in parsed.iter_attachments()] == [filename] * 2


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize(
    "name",
    [
        "Support, leak@evil.example, " + "Team " * 20,
        "Support <leak@evil.example> " + "x" * 80,
        '""' + "x " * 50,
    ],
)
def test_a_long_quoted_display_name_keeps_its_quotes_and_shows_no_other_address(renderer, name):
    # Python 3.11's folder drops the quotes of a display name it splits across lines.
    mailbox = '"' + name.replace('"', '\\"') + '" <r@example.com>'
    out, msg = rendered(renderer, to=[mailbox] * 3, cc=[mailbox], reply_to=mailbox)
    for field in ("To", "Cc", "Reply-To"):
        assert {a.addr_spec for a in msg[field].addresses} == {"r@example.com"}, field
        assert {a.display_name for a in msg[field].addresses} == {name}, field
    assert longest_line(out) <= 998


@pytest.mark.parametrize("renderer", RENDERERS)
def test_the_longest_display_names_accepted_fit_within_998_octets(renderer):
    # 300 octets each: escaped to 600 when quoted, base64 to 400, or as it is.
    names = {"escaped": '"' * 300, "base64": "🎉" * 75, "plain": "n " * 150}
    quoted = {"escaped": '"' + '\\"' * 300 + '"', "base64": names["base64"],
              "plain": names["plain"].strip()}  # fmt: skip
    mailboxes = [f"{name} <{'l' * 60}@{'d' * 60}.example>" for name in quoted.values()]
    out, msg = rendered(renderer, to=mailboxes, cc=mailboxes, reply_to=mailboxes[1])
    assert longest_line(out) <= 998
    if renderer == "classic":  # the parser reads raw UTF-8 headers as surrogates
        assert [a.display_name for a in msg["To"].addresses] == [n.strip() for n in names.values()]


# --- bodies: nothing raw that the transfer encoding may not carry (RFC 2045 §2.7) --------


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize(
    "fields",
    [
        {"body": "nul\x00inside"},
        {"body": "<p>nul\x00inside</p>", "content_type": "html"},
        {"body": "text", "body_html": "<p>nul\x00inside</p>"},
        {"body": "nul\x00inside ü", "body_html": "<p>ok</p>"},
        {"body": "", "body_html": "<p>nul\x00inside</p>"},
    ],
)
def test_a_body_with_nul_goes_out_quoted_printable_and_decodes_to_the_text(renderer, fields):
    out, msg = rendered(renderer, **fields)
    assert b"\x00" not in out.content
    assert b"=00" in out.content
    texts = [part.get_content() for part in msg.walk() if not part.is_multipart()]
    sent = [t for t in (fields.get("body"), fields.get("body_html")) if t]
    # The parser keeps the CR of a decoded quoted-printable line end.
    assert [t.rstrip("\r\n") for t in texts] == sent


# --- properties ---------------------------------------------------------------------------

FRAGMENTS = ["=?utf-8?q?", "=?UTF-8?B?", "?=", "=0D", "=0A", "=00", "DQo=", "_", " ", "\t",
             "From:", "Bcc :", "leak@evil.example", "ü", "🎉", "a" * 300, "=", "?"]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    value=st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=12).map("".join),
    renderer=st.sampled_from(sorted(RENDERERS)),
)
@example(value=SPACED_INJECTION, renderer="smtputf8")
@example(value="=?utf-8?q?x=0D=0ABcc_:_leak@evil.example?=", renderer="smtputf8")
def test_whatever_is_accepted_renders_with_exactly_the_expected_headers(value, renderer):
    raw = {"id": "m", "from": "s@example.com", "to": ["r@example.com"], "subject": value,
           "headers": {"X-Note": value}, "body": BODY, "bcc": list(RENDERERS[renderer])}  # fmt: skip
    try:
        spec = parse_message(raw)
    except InvalidInput as refused:
        reason = refused.reason
    else:
        reason = ""
    if reason:
        assert reason.startswith(("invalid subject", "invalid headers.X-Note")), reason
        return
    out = render(spec, message_id="id@example.com", date_ts=0)  # never refused once accepted
    assert names_in(out) == Counter(expected_headers(spec, ()))
    assert longest_line(out) <= 998
    parsed = email.message_from_bytes(out.content, policy=email.policy.default)
    assert parsed.get_content().strip() == BODY
