"""Send windows: the next opening in a real IANA zone, across both daylight-saving
changes of 2026 in Europe/Rome (29 March, 02:00 → 03:00; 25 October, 03:00 → 02:00), the
rules of a valid window, and the service applying them with a test clock: a message
outside its window is scheduled for the opening and says why; immediate and high ones
go; a retry that falls outside is held again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.send_windows import (
    SendWindows,
    WeeklyWindow,
    check_send_windows,
    next_opening,
)
from mailproxy.service import MailProxy
from mailproxy.service.send_windows import time_zone
from tests.conftest import Clock
from tests.unit.conftest import Api, proxy_to_sink

ROME = ZoneInfo("Europe/Rome")
OFFICE = SendWindows(
    tz="Europe/Rome",
    windows=(WeeklyWindow(days=("mon", "tue", "wed", "thu", "fri"), start="08:00", end="20:00"),),
)


def rome(*fields: int) -> float:
    return datetime(*fields, tzinfo=ROME).timestamp()


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=ZoneInfo("UTC")).timestamp()


@pytest.mark.parametrize(
    ("at", "opens"),
    [
        # Inside: at once.
        (rome(2026, 3, 27, 19, 59), rome(2026, 3, 27, 19, 59)),
        # Friday night before the spring change: Monday 08:00, now UTC+2.
        (rome(2026, 3, 27, 20, 0), utc(2026, 3, 30, 6, 0)),
        (rome(2026, 3, 29, 12, 0), utc(2026, 3, 30, 6, 0)),  # the Sunday of the change
        # Friday night before the autumn change: Monday 08:00, now UTC+1.
        (rome(2026, 10, 23, 21, 0), utc(2026, 10, 26, 7, 0)),
        # Early on a weekday: the same morning.
        (rome(2026, 10, 26, 7, 59), utc(2026, 10, 26, 7, 0)),
    ],
)
def test_the_next_opening_keeps_local_hours_across_both_changes(at, opens):
    assert next_opening(OFFICE, ROME, at) == opens


def test_a_window_starting_in_the_spring_gap_opens_when_the_clocks_have_jumped():
    night = SendWindows(
        tz="Europe/Rome", windows=(WeeklyWindow(days=("sun",), start="02:30", end="04:00"),)
    )
    saturday = rome(2026, 3, 28, 12, 0)
    # 02:30 does not exist on 29 March: the window opens at 03:30 CEST (01:30 UTC).
    assert next_opening(night, ROME, saturday) == utc(2026, 3, 29, 1, 30)
    # In autumn 02:30 happens twice: the first (CEST, 00:30 UTC), and the window lasts
    # until 04:00 CET, two and a half hours.
    autumn = rome(2026, 10, 24, 12, 0)
    assert next_opening(night, ROME, autumn) == utc(2026, 10, 25, 0, 30)
    assert next_opening(night, ROME, utc(2026, 10, 25, 2, 59)) == utc(2026, 10, 25, 2, 59)


def test_a_window_wholly_in_the_spring_gap_does_not_open_that_day():
    gap = SendWindows(
        tz="Europe/Rome", windows=(WeeklyWindow(days=("sun",), start="02:15", end="03:00"),)
    )
    # 02:15-03:00 does not exist on 29 March: the next opening is a week later.
    assert next_opening(gap, ROME, rome(2026, 3, 28, 12, 0)) == rome(2026, 4, 5, 2, 15)


def test_a_day_ending_window_and_several_windows():
    evenings = SendWindows(
        tz="UTC",
        windows=(
            WeeklyWindow(days=("sat",), start="22:00", end="24:00"),
            WeeklyWindow(days=("sun",), start="09:00", end="10:00"),
        ),
    )
    zone = time_zone("UTC")
    assert next_opening(evenings, zone, utc(2026, 12, 12, 23, 59)) == utc(2026, 12, 12, 23, 59)
    assert next_opening(evenings, zone, utc(2026, 12, 13, 0, 0)) == utc(2026, 12, 13, 9, 0)
    assert next_opening(evenings, zone, utc(2026, 12, 13, 10, 0)) == utc(2026, 12, 19, 22, 0)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"windows": ()}, "send_windows.windows"),
        ({"min_priority": 4}, "send_windows.min_priority"),
        ({"windows": (WeeklyWindow(days=(), start="08:00", end="09:00"),)}, "days"),
        ({"windows": (WeeklyWindow(days=("mon", "mon"), start="08:00", end="09:00"),)}, "days"),
        ({"windows": (WeeklyWindow(days=("mon",), start="8:00", end="09:00"),)}, "start"),
        ({"windows": (WeeklyWindow(days=("mon",), start="24:00", end="24:00"),)}, "start"),
        ({"windows": (WeeklyWindow(days=("mon",), start="09:00", end="25:00"),)}, "end"),
        ({"windows": (WeeklyWindow(days=("mon",), start="22:00", end="02:00"),)}, "end"),
    ],
)
def test_a_malformed_window_is_refused_naming_its_field(changes, field):
    with pytest.raises(InvalidInput) as refused:
        check_send_windows("send_windows", msgspec.structs.replace(OFFICE, **changes))
    assert field in refused.value.field


@pytest.mark.parametrize("name", ["Europe", "../etc/passwd", "", "Nope/Zone", "/etc/localtime"])
def test_only_iana_zone_names_are_looked_up(name):
    with pytest.raises(InvalidInput, match="not an IANA time zone"):
        time_zone(name)


# --- the service -----------------------------------------------------------------------

FRIDAY_NIGHT = rome(2026, 3, 27, 21, 0)
MONDAY_MORNING = utc(2026, 3, 30, 6, 0)
OFFICE_BODY = msgspec.json.decode(msgspec.json.encode(OFFICE))


@pytest.fixture
async def proxy(tmp_path: Path, sink) -> AsyncIterator[MailProxy]:
    clock = Clock(FRIDAY_NIGHT)
    async with proxy_to_sink(tmp_path, sink[1], clock=clock) as service:
        await service.put_tenant({"id": "acme", "send_windows": OFFICE_BODY})
        service.test_clock = clock  # type: ignore[attr-defined]
        yield service


def mail(message_id: str, **fields):
    return {"id": message_id, "from": "app@example.com", "to": ["r@example.com"],
            "subject": message_id, **fields}  # fmt: skip


async def test_outside_the_window_medium_and_low_wait_for_it_and_say_why(proxy, sink):
    await proxy.submit(
        [mail("low", priority=3), mail("medium"), mail("high", priority=1),
         mail("now", priority=0)], tenant_id="acme",
    )  # fmt: skip
    await proxy.run_until_idle()
    assert sorted(r.content.split(b"Subject: ")[1][:4] for r in sink[0].received) == [
        b"high", b"now\r",
    ]  # fmt: skip
    for waiting in ("low", "medium"):
        message = await proxy.get_message("acme", waiting)
        assert (message.status.value, message.due_ts) == ("scheduled", MONDAY_MORNING)
        why = await proxy.why("acme", waiting)
        assert (why.reason, why.next_attempt_ts) == ("send_window", MONDAY_MORNING)
    proxy.test_clock.now = MONDAY_MORNING
    await proxy.run_until_idle()
    assert len(sink[0].received) == 4


async def test_a_client_s_deferred_time_outside_the_window_moves_to_the_opening(proxy):
    saturday = rome(2026, 3, 28, 10, 0)
    await proxy.submit([mail("later", deferred_ts=int(saturday))], tenant_id="acme")
    message = await proxy.get_message("acme", "later")
    assert (message.status.value, message.due_ts) == ("scheduled", MONDAY_MORNING)


async def test_an_account_s_windows_replace_the_tenant_s_and_a_retry_is_held_again(proxy, sink):
    always = {"tz": "UTC", "windows": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat",
                                                 "sun"], "start": "00:00", "end": "24:00"}]}  # fmt: skip
    (account,) = await proxy.list_accounts("acme")
    await proxy.put_account(msgspec.to_builtins(account) | {"send_windows": always})
    sink[0].replies["DATA"] = "451 4.3.0 try again"
    await proxy.submit([mail("retried")], tenant_id="acme")
    await proxy.run_until_idle()
    assert (await proxy.get_message("acme", "retried")).attempts == 1
    # The account's windows gone, the tenant's apply: the retry falls on Saturday and
    # waits for Monday without an attempt.
    await proxy.put_account(msgspec.to_builtins(account) | {"send_windows": None})
    sink[0].replies.clear()
    proxy.test_clock.now = rome(2026, 3, 28, 10, 0)
    await proxy.run_until_idle()
    message = await proxy.get_message("acme", "retried")
    assert (message.status.value, message.attempts, message.due_ts) == (
        "scheduled", 1, MONDAY_MORNING,
    )  # fmt: skip
    assert (await proxy.why("acme", "retried")).reason == "send_window"


async def test_a_window_in_an_unknown_zone_is_refused(proxy):
    with pytest.raises(InvalidInput, match=r"send_windows\.tz"):
        await proxy.put_tenant({"id": "acme", "send_windows": OFFICE_BODY | {"tz": "Mars/Olympus"}})


async def test_the_http_api_takes_shows_and_checks_windows(api: Api):
    changed = await api.call("admin", "PUT", "/tenant/A", json={"send_windows": OFFICE_BODY})
    assert changed.status_code == 200, changed.text
    assert changed.json()["tenant"]["send_windows"] == OFFICE_BODY
    for bad, field in (
        (OFFICE_BODY | {"tz": "Mars/Olympus"}, "send_windows.tz"),
        (OFFICE_BODY | {"windows": [{"days": ["monday"], "start": "08:00", "end": "09:00"}]},
         "send_windows.windows[0].days"),
        (OFFICE_BODY | {"windows": [{"days": ["mon"], "start": "9", "end": "10:00"}]},
         "send_windows.windows[0].start"),
    ):  # fmt: skip
        refused = await api.call("admin", "PUT", "/tenant/A", json={"send_windows": bad})
        assert refused.status_code == 422, refused.text
        assert field in refused.json()["errors"][0]["field"], refused.text
    account = {"id": "main", "tenant_id": "A", "kind": "capture", "is_default": True,
               "send_windows": OFFICE_BODY}  # fmt: skip
    saved = await api.call("admin", "POST", "/account", json=account)
    assert saved.json()["account"]["send_windows"] == OFFICE_BODY
