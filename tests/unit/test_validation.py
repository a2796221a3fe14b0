"""Validation at the edge: table-driven, each reason names the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.validation import (
    MessageLimits,
    check_addr_spec,
    check_header_value,
    parse_account,
    parse_message,
    parse_tenant,
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
    with pytest.raises(InvalidInput, match=r"invalid rate_limits\.per_hour: at least 1"):
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
