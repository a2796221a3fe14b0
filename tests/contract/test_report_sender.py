"""Contract of the ReportSender port, run against every sender: HTTP to a real receiver
on 127.0.0.1, HTTP through an injected ``httpx.MockTransport`` (names resolved by an
in-process stub), and the recording sender shipped for applications' tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from mailproxy.adapters.http_reports import HttpReportSender
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.model import ReportEvent, Tenant
from mailproxy.ports.reporting import ReportSender, SyncAnswer
from mailproxy.testing import RecordingReportSender
from tests.report_receiver import Reply, running_receiver


@dataclass
class Application:
    sender: ReportSender
    tenant: Tenant
    #: The event ids the application took, call by call.
    took: Callable[[], list[list[str]]]
    #: Make the application answer the next call with a server error.
    fail_next: Callable[[], None]
    state: dict[str, object] = field(default_factory=dict)


async def stub_resolve(host: str, port: int, scope: str | None = None) -> list[str]:
    return ["93.184.216.34"] if host == "app.acme.example" else []


@pytest.fixture(params=["http", "mock", "recording"])
async def application(request) -> AsyncIterator[Application]:
    if request.param == "http":
        with running_receiver() as receiver:
            sender = HttpReportSender(timeout_s=5, egress_allow=parse_networks("127.0.0.0/8"))
            yield Application(
                sender, Tenant(id="t1", client_base_url=receiver.url),
                lambda: [[e["event_id"] for e in c.entries] for c in receiver.calls],
                lambda: receiver.replies.append(Reply(status=500)),
            )  # fmt: skip
            await sender.close()
    elif request.param == "mock":
        calls: list[list[str]] = []
        failing: list[bool] = []

        def answer(request: httpx.Request) -> httpx.Response:
            if failing:
                failing.pop()
                return httpx.Response(500)
            calls.append([e["event_id"] for e in json.loads(request.content)["delivery_report"]])
            return httpx.Response(200, json={"ok": True})

        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        sender = HttpReportSender(timeout_s=5, resolve=stub_resolve, client=client)
        yield Application(
            sender, Tenant(id="t1", client_base_url="https://app.acme.example"),
            lambda: calls, lambda: failing.append(True),
        )  # fmt: skip
        await sender.close()
        await client.aclose()
    else:
        recording = RecordingReportSender()
        yield Application(
            recording, Tenant(id="t1", client_base_url="https://app.acme.example"),
            lambda: [[e.event_id for e in c.events] for c in recording.calls],
            lambda: recording.answers.append(SyncAnswer(acknowledged=False, error="HTTP 500")),
        )  # fmt: skip


def event(n: int) -> ReportEvent:
    return ReportEvent(
        event="sent",
        event_id=f"e{n}",
        id=f"m{n}",
        tenant_id="t1",
        account_id="a1",
        attempt=1,
        sent_ts=1_800_000_000 + n,
    )


async def test_events_go_in_one_call_oldest_first_and_are_acknowledged(application):
    answer = await application.sender.post(application.tenant, [event(1), event(2)])
    assert answer.acknowledged
    assert application.took() == [["e1", "e2"]]


async def test_a_heartbeat_is_a_call_without_events(application):
    assert (await application.sender.post(application.tenant, [])).acknowledged
    assert application.took() == [[]]


async def test_a_failing_application_is_not_acknowledged_and_nothing_raises(application):
    application.fail_next()
    answer = await application.sender.post(application.tenant, [event(1)])
    assert not answer.acknowledged
    assert answer.error
    assert (await application.sender.post(application.tenant, [event(1)])).acknowledged
    assert application.took()[-1] == ["e1"]  # the same events, taken on the next call


async def test_a_tenant_without_a_callback_url_is_not_called(application):
    answer = await application.sender.post(Tenant(id="t2"), [event(1)])
    assert (answer.acknowledged, answer.error) == (False, "no client_base_url")
    assert application.took() == []


async def test_close_is_idempotent(application):
    await application.sender.close()
    await application.sender.close()


async def test_a_tenant_the_sender_can_call_is_not_refused(application):
    assert application.sender.refusal(application.tenant) is None
    assert application.sender.refusal(Tenant(id="t2")) is None  # no URL: nothing to refuse
