"""mailproxy.webhooks.verify on hostile calls: every failure is InvalidSignature."""

from __future__ import annotations

import json

import pytest

from mailproxy import webhooks
from mailproxy.domain.reporting import signature_header

BODY = json.dumps({"delivery_report": [{"event": "sent", "event_id": "e1", "id": "m1",
                                        "tenant_id": "t", "account_id": "a", "attempt": 1,
                                        "sent_ts": 1}]}).encode()  # fmt: skip
NOW = 1_800_000_000


def signed(ts: int | str = NOW, secrets: tuple[str, ...] = ("s1",)) -> dict[str, str]:
    stamp = int(ts) if str(ts).isdigit() and len(str(ts)) < 13 else NOW
    return {"X-Mail-Proxy-Timestamp": str(ts),
            "X-Mail-Proxy-Signature": signature_header(list(secrets), stamp, BODY)}  # fmt: skip


def test_a_call_the_service_signed_reads_as_entries_in_any_header_case():
    lower = {k.lower(): v for k, v in signed().items()}
    (entry,) = webhooks.verify(lower, BODY, "s1", now=NOW)
    assert (entry.event, entry.id, entry.event_id) == ("sent", "m1", "e1")
    assert webhooks.verify(signed(secrets=("new", "old")), BODY, ["old"], now=NOW)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Mail-Proxy-Timestamp": str(NOW)},
        signed(ts="1" + "0" * 400),  # a number far too large
        signed(ts="-5"),
        signed(ts="1e9"),
        signed(ts=" 1800000000"),
        {**signed(), "X-Mail-Proxy-Signature": "v1=" + "0" * 64},
        {**signed(), "X-Mail-Proxy-Signature": ","},
        signed(ts=NOW - 301),
    ],
)
def test_anything_else_is_an_invalid_signature(headers):
    with pytest.raises(webhooks.InvalidSignature):
        webhooks.verify(headers, BODY, "s1", now=NOW)


def test_a_signed_body_that_is_not_a_report_is_a_value_error():
    body = b"[]"
    headers = {"X-Mail-Proxy-Timestamp": str(NOW),
               "X-Mail-Proxy-Signature": signature_header(["s1"], NOW, body)}  # fmt: skip
    with pytest.raises(ValueError, match="not a delivery report"):
        webhooks.verify(headers, body, "s1", now=NOW)


def test_the_answer_says_what_the_application_queued():
    assert json.loads(webhooks.answer(queued=2, next_sync_after=NOW)) == {
        "ok": True, "queued": 2, "next_sync_after": NOW,
    }  # fmt: skip
