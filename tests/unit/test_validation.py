"""Validation at the edge: table-driven, each reason names the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailproxy.domain.configuration import parse_account, parse_tenant
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.headers import check_header_value
from mailproxy.domain.validation import (
    MessageLimits,
    check_addr_spec,
    parse_message,
    split_address_list,
)

BASE = {"id": "m1", "from": "a@example.com", "to": ["b@example.com"], "subject": "hi"}


@pytest.mark.parametrize(
    "address",
    [
        "user@example.com",
        "first.last+tag@sub.example.co",
        "δοκιμή@παράδειγμα.δοκιμή",
        "user@bücher.example",
        "x@localhost",
        "o'brien@example.test",
        "a@" + "b" * 63 + ".test",
    ],
)
def test_valid_addresses_pass(address):
    assert check_addr_spec("to", address) == address


@pytest.mark.parametrize(
    "address",
    [
        "no-at",
        "a@",
        "@b",
        "a@@b",
        "a" * 65 + "@x.test",
        "a@" + ("b" * 60 + ".") * 5 + "test",
        '"quoted local"@x.test',
        "a@[127.0.0.1]",
        "a..b@x.test",
        ".a@x.test",
        "a@-x.test",
        "good@x.test\r\nRCPT TO:<evil@x.test>",
        "a b@x.test",
        "a@x.test.",
        "a@x_y.test",
        "r\udcff\udcfe@x.test",  # bytes that were not UTF-8, as aiosmtpd hands them on
    ],
)
def test_invalid_addresses_are_rejected_naming_the_field(address):
    with pytest.raises(InvalidInput) as caught:
        check_addr_spec("to", address)
    assert caught.value.reason.startswith("invalid address in to")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"from": None}, "missing from"),
        ({"to": ""}, "missing to"),
        ({"to": []}, "missing to"),
        ({"subject": None}, "missing subject"),
        ({"id": ""}, "missing id"),
        ({"status": "sent"}, "unknown field: status"),
        ({"priority": 7}, "invalid priority: 7"),
        ({"priority": "urgent"}, "invalid priority: 'urgent'"),
        ({"subject": 5}, "invalid subject: expected str, got int"),
        ({"id": "x" * 201}, "invalid id"),
        ({"subject": "a\r\nBcc: evil@x.test"}, "invalid subject: control characters"),
        ({"subject": "x=?UTF-8?Q?=0A?=Bcc: evil@x.test"}, "invalid subject: encoded word"),
        ({"subject": "nul\x00"}, "invalid subject: control characters"),
        ({"headers": {"Bcc": "x@y.test"}}, "header not allowed: Bcc"),
        ({"headers": {"Content-Type": "text/html"}}, "header not allowed: Content-Type"),
        ({"headers": {"X-Bad Name": "v"}}, "invalid header name"),
        ({"headers": {"X-Ü": "v"}}, "invalid header name"),
        ({"headers": {"X-Ok": "v\nInjected: 1"}}, "invalid headers.X-Ok"),
        ({"to": ["ok@x.test", "bad"]}, "invalid address in to"),
        ({"cc": "bad@"}, "invalid address in cc"),
        ({"metadata": {"k": "v" * 5000}}, "invalid metadata"),
        ({"batch_code": "b" * 65}, "invalid batch_code"),
        ({"to": [f"r{i}@x.test" for i in range(101)]}, "too many recipients"),
        ({"attachments": [{"filename": "a.txt", "storage_path": "base64:!!!"}]}, "invalid base64"),
        (
            {"attachments": [{"filename": "../a", "storage_path": "base64:aGk="}]},
            "invalid attachments[0].filename",
        ),
        ({"message_id": "no-at-sign"}, "invalid message_id"),
        ({"deferred_ts": -1}, "invalid deferred_ts"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason_naming_the_field(change, reason):
    raw = {**BASE, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(InvalidInput) as caught:
        parse_message(raw)
    assert caught.value.reason.startswith(reason), caught.value.reason


def test_a_message_is_normalised():
    spec = parse_message(
        {
            **BASE,
            "to": 'A <a@x.test>, "Doe, J" <j@x.test>',
            "priority": "high",
            "message_id": "<abc@x.test>",
            "cc": ["c@x.test"],
        }
    )
    assert spec.to == ("A <a@x.test>", '"Doe, J" <j@x.test>')
    assert spec.priority == 1
    assert spec.message_id == "abc@x.test"
    assert spec.cc == ("c@x.test",)


def test_md5_marker_is_stripped_and_checked_against_inline_content():
    ok = parse_message(
        {
            **BASE,
            "attachments": [
                {
                    "filename": "r_{MD5:49f68a5c8493ec2c0bf489821c21fc3b}.txt",
                    "storage_path": "base64:aGk=",
                }
            ],
        }
    )
    assert ok.attachments[0].filename == "r.txt"
    assert ok.attachments[0].fetch_mode == "base64"
    with pytest.raises(InvalidInput, match="md5 mismatch"):
        parse_message(
            {
                **BASE,
                "attachments": [
                    {
                        "filename": "r_{MD5:00000000000000000000000000000000}.txt",
                        "storage_path": "base64:aGk=",
                    }
                ],
            }
        )


@pytest.mark.parametrize(
    ("path", "mode"),
    [
        ("base64:aGk=", "base64"),
        ("@doc=1", "endpoint"),
        ("https://h/x", "http_url"),
        ("a/b.pdf", "filesystem"),
    ],
)
def test_fetch_mode_is_inferred_from_the_path(path, mode):
    raw = {**BASE, "attachments": [{"filename": "f", "storage_path": path}]}
    assert parse_message(raw).attachments[0].fetch_mode == mode


def test_comma_lists_keep_quoted_commas():
    assert split_address_list('"A, B" <a@x.test>, c@x.test,') == ['"A, B" <a@x.test>', "c@x.test"]


@given(st.text(alphabet=st.characters(categories=["Cc", "Zl", "Zp"]), min_size=1))
def test_no_control_character_other_than_tab_passes_a_header(chars):
    value = f"a{chars}b"
    if set(chars) <= {"\t"}:
        assert check_header_value("subject", value) == value
    else:
        with pytest.raises(InvalidInput):
            check_header_value("subject", value)


def test_tenant_and_account_validation():
    assert parse_tenant({"id": "acme"}).name == "acme"
    with pytest.raises(InvalidInput, match="invalid id"):
        parse_tenant({"id": "bad id"})
    with pytest.raises(InvalidInput, match=r"invalid rate_limits\.per_hour: 1\.\."):
        parse_tenant({"id": "acme", "rate_limits": {"per_minute": 5, "per_hour": 0}})
    with pytest.raises(InvalidInput, match="missing host"):
        parse_account({"id": "a", "tenant_id": "t"})
    with pytest.raises(InvalidInput, match="invalid port"):
        parse_account({"id": "a", "tenant_id": "t", "host": "h", "port": 0})
    with pytest.raises(InvalidInput, match="unknown field"):
        parse_account({"id": "a", "tenant_id": "t", "kind": "capture", "colour": "red"})
    assert parse_account({"id": "a", "tenant_id": "t", "kind": "capture"}).host is None


def test_message_limits_are_settable():
    base = {"id": "m", "from": "a@example.com", "to": ["b@example.com", "c@example.com"],
            "subject": "s", "metadata": {"a": {"b": 1}}}  # fmt: skip
    assert parse_message(base).to == ("b@example.com", "c@example.com")
    with pytest.raises(InvalidInput, match="too many recipients: more than 1"):
        parse_message(base, MessageLimits(max_recipients=1))
    with pytest.raises(InvalidInput, match="nested deeper than 1"):
        parse_message(base, MessageLimits(max_metadata_depth=1))


def test_metadata_of_any_depth_or_with_lone_surrogates_is_refused_plainly():
    deep: list[object] = []
    for _ in range(100_000):  # past the interpreter's recursion limit
        deep = [deep]
    base = {"id": "m", "from": "a@example.com", "to": "b@example.com", "subject": "s"}
    with pytest.raises(InvalidInput, match="nested deeper than 8"):
        parse_message({**base, "metadata": {"a": deep}})
    with pytest.raises(InvalidInput, match="not UTF-8"):
        parse_message({**base, "metadata": {"a": "\ud800"}})


# --- encoded words, ids, MIME types: every field that reaches a header or the envelope ---

#: An encoded word with spaces inside (skipped by the old check) that the SMTPUTF8
#: renderer on Python 3.11/3.12 decodes into a second From header and a forged body.
SPACED_INJECTION = "=?utf-8?q?a=0D=0AFrom:_Billing_<billing@bank.example>=0D=0A=0D=0Afake ?="
HIDDEN_BCC = "=?utf-8?q?x=0D=0ABcc_:_leak@evil.example?="


@pytest.mark.parametrize(
    "hidden",
    [
        SPACED_INJECTION,
        HIDDEN_BCC,
        "=?utf-8?b?DQpCY2M6IGxlYWtAZXZpbC5leGFtcGxl?=",  # base64 of CRLF "Bcc: ..."
        "=?UTF-8?Q?=0a?=",
        "=?utf-8?q?a b=0A c?=",  # spaces inside, as the lenient parser takes them
        "=?utf-8?q?a?b=0A?=",  # a "?" inside, as email.header.decode_header takes it
        "=?utf-8?b?QQ==DQo=?=",  # a line break after an inner padding
        "=?utf-8?B?DQ?=",  # unpadded
        "=?utf-8*en?q?=0D?=",  # RFC 2231 language suffix
        "=?x-unknown?q?=00?=",  # unknown charset: decoders keep the raw bytes
        "=?utf-7?q?+AA0-?=",  # CR only once decoded with the charset
        "=?cp500?q?=25?=",  # EBCDIC LF
        "=?utf-7?q?+AA?= =?utf-7?q?0-?=",  # CR only once adjacent words are joined
        "=?utf-8?q?=C2=85?=",  # NEL, a C1 control
        "=?x?=?utf-8?q?=0A?=",  # overlapping candidates
        "=?utf-8?q?=3D=3Futf-8=3Fq=3F=0A=3F=3D?=",  # decodes to another encoded word
    ],
)
def test_encoded_words_hiding_control_characters_are_refused_in_every_header_field(hidden):
    fields = {
        "subject": ({"subject": f"s {hidden}"}, "invalid subject"),
        "header value": ({"headers": {"X-Note": hidden}}, "invalid headers.X-Note"),
        "from name": ({"from": f"{hidden} <a@example.com>"}, "invalid from"),
        "to name": ({"to": [f"{hidden} <b@example.com>"]}, "invalid to"),
        "cc name": ({"cc": [f"{hidden} <c@example.com>"]}, "invalid cc"),
        "bcc name": ({"bcc": [f"{hidden} <d@example.com>"]}, "invalid bcc"),
        "reply_to name": ({"reply_to": f"{hidden} <e@example.com>"}, "invalid reply_to"),
        "filename": (
            {"attachments": [{"filename": hidden, "storage_path": "base64:aGk="}]},
            "invalid attachments[0].filename",
        ),
    }
    for field, (change, reason) in fields.items():
        with pytest.raises(InvalidInput) as caught:
            parse_message({**BASE, **change})
        assert caught.value.reason.startswith(reason), (field, caught.value.reason)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"message_id": "=?utf-8?q?=0D=0ABcc:_x@evil.example?=@example.com"}, "invalid message_id"),
        ({"return_path": "=?utf-8?q?=0D=0A?=@example.com"}, "invalid address in return_path"),
        ({"to": ["=?utf-8?q?=0D=0A?=@example.com"]}, "invalid to"),
    ],
)
def test_encoded_words_hiding_control_characters_are_refused_in_ids_and_addresses(change, reason):
    with pytest.raises(InvalidInput) as caught:
        parse_message({**BASE, **change})
    assert caught.value.reason.startswith(reason), caught.value.reason


@pytest.mark.parametrize(
    "value",
    [
        "=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=",
        "=?iso-2022-jp?b?GyRCJEYkOSRIGyhC?=",  # ESC in the raw bytes is that charset's own
        "=?utf-8?b?xIHEgQ==?=",  # UTF-8 continuation bytes 0x81: not C1 controls
        "a =? b ?= c",
        "=?utf-8?b?!!!?=",
    ],
)
def test_encoded_words_of_plain_text_are_accepted(value):
    assert check_header_value("subject", value) == value


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "a/b"}, "invalid id: no '/'"),
        ({"id": "/"}, "invalid id: no '/'"),
        ({"id": "a%2Fb"}, "invalid id: no '/' or '%'"),
        ({"id": "50%"}, "invalid id: no '/' or '%'"),
        ({"id": "."}, "invalid id: no '/' or '%', not '.' or '..'"),
        ({"id": ".."}, "invalid id: no '/' or '%', not '.' or '..'"),
        ({"tenant_id": ".."}, "invalid tenant_id"),
    ],
)
def test_ids_that_cannot_be_named_in_a_url_path_are_refused(change, reason):
    with pytest.raises(InvalidInput) as caught:
        parse_message({**BASE, **change})
    assert caught.value.reason.startswith(reason), caught.value.reason


def test_account_and_tenant_ids_that_cannot_be_named_in_a_url_path_are_refused():
    for account_id in ("x/y", "a%41", ".."):
        with pytest.raises(InvalidInput, match="an id is a URL path segment"):
            parse_account({"id": account_id, "tenant_id": "t", "kind": "capture"})
    for tenant_id in (".", ".."):
        with pytest.raises(InvalidInput, match="invalid id"):
            parse_tenant({"id": tenant_id})
    assert parse_message({**BASE, "id": "order:7 ü?#&"}).id == "order:7 ü?#&"
    assert parse_tenant({"id": "a.b"}).id == "a.b"


@pytest.mark.parametrize(
    "mime_type",
    [
        'text/plain; name="evil.exe"',
        "text/plain;name=evil.exe",
        "text/plain\tx",
        "text /plain",
        "text/",
        "/plain",
        "text/plain/x",
        "text/pl@in",
        "täxt/plain",
        "text",
    ],
)
def test_attachment_mime_types_are_type_slash_subtype_tokens_only(mime_type):
    raw = {**BASE, "attachments": [{"filename": "a", "storage_path": "base64:aGk=",
                                    "mime_type": mime_type}]}  # fmt: skip
    with pytest.raises(InvalidInput) as caught:
        parse_message(raw)
    assert caught.value.reason.startswith("invalid attachments[0].mime_type: expected type/subtype")


@pytest.mark.parametrize(
    "mime_type", ["application/vnd.ms-excel", "image/svg+xml", "application/x-tar", "TEXT/Plain"]
)
def test_registered_looking_mime_types_are_accepted(mime_type):
    raw = {**BASE, "attachments": [{"filename": "a", "storage_path": "base64:aGk=",
                                    "mime_type": mime_type}]}  # fmt: skip
    assert parse_message(raw).attachments[0].mime_type == mime_type


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"from": f"{'n' * 301} <a@example.com>"}, "invalid from: display name longer than 300"),
        ({"to": [f'"{"ü" * 151}" <b@example.com>']}, "invalid to: display name longer than 300"),
        ({"message_id": "a" * 240 + "@example.com"}, "invalid message_id"),
        ({"message_id": "ü@example.com"}, "invalid message_id"),
        ({"message_id": "a(comment)@example.com"}, "invalid message_id"),
        ({"message_id": "a,b@example.com"}, "invalid message_id"),
    ],
)
def test_header_fields_that_cannot_be_written_within_998_octets_are_refused(change, reason):
    with pytest.raises(InvalidInput) as caught:
        parse_message({**BASE, **change})
    assert caught.value.reason.startswith(reason), caught.value.reason


@pytest.mark.parametrize("name", ["Content-Disposition", "content-id", "Content-Language"])
def test_content_headers_are_refused_because_the_service_builds_the_mime_structure(name):
    with pytest.raises(InvalidInput, match=f"header not allowed: {name}"):
        parse_message({**BASE, "headers": {name: "attachment; filename*=utf-8''a%0D%0AX: 1"}})


HI_MD5 = "49f68a5c8493ec2c0bf489821c21fc3b"  # of b"hi"


@pytest.mark.parametrize(
    "filename",
    [
        # Taking the marker out joins "=0" and "A" into "=0A", an encoded line feed.
        f"=?utf-8?q?invoice=0{{MD5:{HI_MD5}}}ABcc:_x@evil.example?=.pdf",
        f"a\r{{MD5:{HI_MD5}}}\nb.pdf",
        f"{{MD5:{HI_MD5}}}",  # nothing left to send
    ],
)
def test_a_file_name_is_checked_as_it_is_sent_once_its_md5_marker_is_out(filename):
    attachment = {"filename": filename, "storage_path": "base64:aGk="}
    with pytest.raises(InvalidInput, match="filename"):
        parse_message({**BASE, "attachments": [attachment]})


def test_an_attachment_s_auth_is_accepted_and_not_kept():
    attachment = {"filename": "a.txt", "storage_path": "base64:aGk=",
                  "auth": {"token": "ATTACHMENT-SECRET"}}  # fmt: skip
    spec = parse_message({**BASE, "attachments": [attachment]})
    assert "ATTACHMENT-SECRET" not in repr(spec)


@pytest.mark.parametrize(
    "url",
    ["https://app.example/hooks?token=s3cret", "https://app.example/x#frag", "https://a.example/?"],
)
def test_a_callback_base_url_has_no_query_or_fragment(url):
    with pytest.raises(InvalidInput, match="client_base_url: no query"):
        parse_tenant({"id": "acme", "client_base_url": url})


@pytest.mark.parametrize("value", ["=?utf-8?q?=0D", "x =?utf-8?q?a=0Ab", "=?utf-8?b?DQo"])
def test_an_encoded_word_left_open_at_the_end_is_decoded_too(value):
    # The SMTPUTF8 renderer's parser decodes such a word and wrote the bare CR or LF.
    with pytest.raises(InvalidInput, match="encoded word hides control characters"):
        check_header_value("subject", value)


@pytest.mark.parametrize("value", [10**30, 2**63, -1])
def test_integers_have_their_range_for_library_callers_too(value):
    with pytest.raises(InvalidInput, match="deferred_ts"):
        parse_message({**BASE, "deferred_ts": value})
    account = {"id": "a", "tenant_id": "t", "kind": "capture"}
    with pytest.raises(InvalidInput, match="max_connections"):
        parse_account(account | {"max_connections": value})
    with pytest.raises(InvalidInput, match="limit_per_day"):
        parse_account(account | {"limit_per_day": value})
    with pytest.raises(InvalidInput, match=r"rate_limits\.per_hour"):
        parse_tenant({"id": "t", "rate_limits": {"per_hour": value}})
