"""Suppression at send time and refusals that count as bounces, edge to edge: the service
over a real SQLite file, the SMTP transport against an aiosmtpd sink on loopback; and the
suppression routes of the HTTP API."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailproxy.domain.correlation import CORRELATION_HEADER, find_tokens, read_token
from mailproxy.service import MailProxy
from tests.conftest import Clock
from tests.unit.conftest import Api, proxy_to_sink


@pytest.fixture
async def proxy(tmp_path: Path, sink) -> AsyncIterator[MailProxy]:
    async with proxy_to_sink(
        tmp_path, sink[1], return_path="bounces+{token}@bounce.example.com"
    ) as proxy:
        yield proxy


def mail(message_id, *recipients):
    return {"id": message_id, "from": "app@example.com", "to": list(recipients), "subject": "s"}


async def entries(proxy, tenant="acme"):
    return [r.event for r in await proxy.outbox.pending_reports(tenant, 100)]


async def test_a_suppressed_recipient_is_dropped_from_the_envelope_and_listed(proxy, sink):
    handler, _ = sink
    await proxy.suppressions.add("acme", [{"address": "gone@Example.com"}])
    await proxy.submit([mail("m1", "gone@example.com", "ok@example.com")], tenant_id="acme")
    await proxy.run_until_idle()
    (received,) = handler.received
    assert received.rcpt_tos == ["ok@example.com"]
    (sent,) = await entries(proxy)
    assert sent.event == "sent"
    assert [(r.address, r.code, r.reason) for r in sent.refused_recipients] == [
        ("gone@example.com", None, "suppressed")
    ]


async def test_a_message_whose_recipients_are_all_suppressed_fails_without_smtp(proxy, sink):
    handler, _ = sink
    sessions = handler.sessions  # the sink's own start-up check is one
    await proxy.suppressions.add("acme", [{"address": "gone@example.com"}])
    await proxy.submit([mail("m1", "gone@example.com")], tenant_id="acme")
    await proxy.run_until_idle()
    assert handler.sessions == sessions
    (error,) = await entries(proxy)
    assert (error.event, error.error) == ("error", "suppressed")
    assert (await proxy.get_message("acme", "m1")).status == "error"


async def test_a_suppression_added_after_acceptance_applies(proxy, sink):
    handler, _ = sink
    await proxy.submit([mail("m1", "late@example.com")], tenant_id="acme")
    await proxy.suppressions.add("acme", [{"address": "late@example.com"}])
    await proxy.run_until_idle()
    assert handler.received == []


async def test_every_message_carries_its_token_in_the_header_and_the_verp_sender(proxy, sink):
    handler, _ = sink
    await proxy.submit(
        [mail("one", "a@example.com"), mail("two", "b@example.com", "c@example.com")],
        tenant_id="acme",
    )
    await proxy.run_until_idle()
    by_rcpt = {tuple(r.rcpt_tos): r for r in handler.received}
    single, double = by_rcpt[("a@example.com",)], by_rcpt[("b@example.com", "c@example.com")]
    for received in (single, double):
        (header_token,) = find_tokens(received.content.split(b"\r\n", 1)[0].decode())
        assert received.content.startswith(f"{CORRELATION_HEADER}: {header_token}".encode())
        local = received.mail_from.split("@")[0]
        assert received.mail_from.endswith("@bounce.example.com")
        assert local.startswith("bounces+mp1")
        assert len(local) <= 64
    assert read_token(single.mail_from.split("+")[1].split("@")[0]).slot == 1
    assert read_token(double.mail_from.split("+")[1].split("@")[0]).slot == 0


async def test_a_message_that_names_its_own_return_path_keeps_it(proxy, sink):
    handler, _ = sink
    own = mail("m1", "a@example.com") | {"return_path": "owner@example.com"}
    await proxy.submit([own], tenant_id="acme")
    await proxy.run_until_idle()
    assert handler.received[0].mail_from == "owner@example.com"


@pytest.mark.parametrize(
    ("reply", "bounced"),
    [
        ("550 5.1.1 <dead@example.com>: Recipient address rejected: unknown user", True),
        ("550 no such user here", True),
        ("550 5.7.1 relaying denied", False),
        ("452 4.2.2 mailbox full", False),
    ],
)
async def test_a_dead_address_refused_at_rcpt_is_a_hard_bounce_and_suppressed(
    proxy, sink, reply, bounced
):
    handler, _ = sink
    handler.replies["RCPT:dead@example.com"] = reply
    assert await proxy.check_recipient("acme", "dead@example.com") is None  # list read empty
    await proxy.submit([mail("m1", "dead@example.com", "ok@example.com")], tenant_id="acme")
    await proxy.run_until_idle()
    # An SMTP submission refuses the address at once when the refusal suppressed it.
    expected = "suppressed" if bounced else None
    assert await proxy.check_recipient("acme", "dead@example.com") == expected
    events = await entries(proxy)
    bounces = [e for e in events if e.event == "bounced"]
    assert bool(bounces) is bounced
    if bounced:
        (bounce,) = bounces
        assert (bounce.recipient, bounce.bounce_type, bounce.source) == (
            "dead@example.com", "hard", "smtp",
        )  # fmt: skip
        (record,) = (await proxy.suppressions.bounces_of("acme", ["m1"])).get("m1", [])
        assert record.recipient == "dead@example.com"
    suppressed = (await proxy.suppressions.page("acme")).suppressions
    assert [s.address for s in suppressed] == (["dead@example.com"] if bounced else [])
    # The next message to the address never reaches the server when it is suppressed.
    handler.replies.clear()
    await proxy.submit([mail("m2", "dead@example.com")], tenant_id="acme")
    await proxy.run_until_idle()
    second = await proxy.get_message("acme", "m2")
    assert (second.status, second.error) == (("error", "suppressed") if bounced else ("sent", None))


async def test_a_dead_address_is_a_bounce_even_when_another_recipient_is_refused_for_now(
    tmp_path, sink
):
    handler, port = sink
    clock = Clock()
    handler.replies["RCPT:dead@example.com"] = "550 5.1.1 unknown user"
    handler.replies["RCPT:full@example.com"] = "452 4.2.2 mailbox full"
    async with proxy_to_sink(tmp_path, port, clock=clock) as proxy:
        await proxy.submit([mail("m1", "dead@example.com", "full@example.com")], tenant_id="acme")
        await proxy.run_until_idle()
        assert (await proxy.get_message("acme", "m1")).status == "deferred"
        (bounce,) = [e for e in await entries(proxy) if e.event == "bounced"]
        assert (bounce.recipient, bounce.bounce_type) == ("dead@example.com", "hard")
        suppressed = (await proxy.suppressions.page("acme")).suppressions
        assert [s.address for s in suppressed] == ["dead@example.com"]
        # The retry goes to the recipient that may still be reached, and only to it.
        handler.replies.clear()
        clock.advance(3600)
        await proxy.run_until_idle()
        (received,) = handler.received
        assert received.rcpt_tos == ["full@example.com"]
        assert (await proxy.get_message("acme", "m1")).status == "sent"
        events = [e.event for e in await entries(proxy)]
        assert events.count("bounced") == 1


async def test_a_dead_single_recipient_refused_after_data_is_a_hard_bounce(proxy, sink):
    handler, _ = sink
    handler.replies["DATA"] = "550 5.1.1 mailbox unavailable"
    await proxy.submit([mail("m1", "dead@example.com")], tenant_id="acme")
    await proxy.run_until_idle()
    events = [e.event for e in await entries(proxy)]
    assert events == ["error", "bounced"]
    assert [s.reason for s in (await proxy.suppressions.page("acme")).suppressions] == [
        "hard_bounce"
    ]


# --- the routes ---------------------------------------------------------------------


async def test_the_suppression_routes_list_add_remove_and_export(api: Api):
    added = await api.call(
        "A", "POST", "/suppressions",
        json={"entries": [
            {"address": "x@example.com", "detail": " =cmd()"}, {"address": "y@example.com"},
            {"address": "a/b@example.com"},
        ]},
    )  # fmt: skip
    assert added.status_code == 200, added.text
    assert added.json() == {"ok": True, "added": 3}
    assert (await api.call("A", "DELETE", "/suppressions/a/b@example.com")).status_code == 200
    listed = (await api.call("A", "GET", "/suppressions", params={"limit": 1})).json()
    assert [s["address"] for s in listed["suppressions"]] == ["x@example.com"]
    assert listed["suppressions"][0]["reason"] == "manual"
    rest = await api.call("A", "GET", "/suppressions", params={"cursor": listed["next_cursor"]})
    assert [s["address"] for s in rest.json()["suppressions"]] == ["y@example.com"]
    exported = await api.call("A", "GET", "/suppressions/export")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0][:2] == ["address", "reason"]
    assert [row[0] for row in rows[1:]] == ["x@example.com", "y@example.com"]
    assert rows[1][5] == "' =cmd()"  # never a formula in a spreadsheet
    assert (await api.call("A", "DELETE", "/suppressions/x@example.com")).status_code == 200
    assert (await api.call("A", "DELETE", "/suppressions/x@example.com")).status_code == 404
    # Another tenant sees none of it and cannot remove it.
    assert (await api.call("B", "GET", "/suppressions")).json()["suppressions"] == []
    assert (await api.call("B", "DELETE", "/suppressions/y@example.com")).status_code == 404
    admin = await api.call("admin", "GET", "/suppressions", params={"tenant_id": "A"})
    assert [s["address"] for s in admin.json()["suppressions"]] == ["y@example.com"]


@pytest.mark.parametrize(
    "body",
    [
        {"entries": [{"address": "not an address"}]},
        {"entries": [{"address": "a@example.com", "expires_ts": 1}]},
        {"entries": [{"address": "a@example.com", "surprise": 1}]},
        {"entries": [{"address": "a@example.com", "detail": "two\nlines"}]},
        {"entries": "a@example.com"},
    ],
)
async def test_bad_suppression_input_is_a_clear_422_and_adds_nothing(api: Api, body):
    answer = await api.call("A", "POST", "/suppressions", json=body)
    assert answer.status_code == 422, answer.text
    assert "entries" in answer.text
    assert (await api.call("A", "GET", "/suppressions")).json()["suppressions"] == []


async def test_listing_with_a_bad_reason_is_refused(api: Api):
    answer = await api.call("A", "GET", "/suppressions", params={"reason": "whim"})
    assert answer.status_code == 422
    assert "reason" in answer.text
