"""Send windows: the weekly hours in a time zone when a tenant's (or an account's) medium
and low messages may go, and the next instant a message may go by them.

Pure: the zone comes in as a ``tzinfo`` (the caller looks it up), the instant as Unix
seconds. Local times are read as the zone reads them on that date, so a window keeps its
local hours across daylight-saving changes; a start that does not exist that day (inside
the spring-forward gap) begins when the clocks have jumped, and one that happens twice
(the autumn overlap) at its first occurrence.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Literal

import msgspec

from mailproxy.domain.errors import InvalidInput

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class WeeklyWindow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Sending is allowed on ``days`` from ``start`` to ``end`` (``"HH:MM"``, local time;
    ``end`` later than ``start``, ``"24:00"`` for the end of the day)."""

    days: tuple[Weekday, ...]
    start: str
    end: str


class SendWindows(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When messages of priority ``min_priority`` and lower (by default medium and low)
    may be sent: inside one of ``windows``, read in the IANA time zone ``tz``. Immediate
    and high messages always go (below the default ``min_priority``)."""

    tz: str
    windows: tuple[WeeklyWindow, ...]
    min_priority: int = 2


#: ``HH:MM``, 00:00 to 23:59, and 24:00 (the end of the day, for ``end``).
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
MAX_WINDOWS = 21
#: Priorities are 0 (immediate) to 3 (low).
_PRIORITIES = range(4)
#: Days looked ahead for the next opening: a week, and the day on either side.
_HORIZON_DAYS = 9


def check_send_windows(field: str, windows: SendWindows) -> SendWindows:
    """The clock times, days and priority threshold of ``windows`` (not its zone, which
    the caller looks up: :class:`InvalidInput` with ``field`` either way)."""
    if not windows.windows:
        raise InvalidInput(f"{field}.windows", f"invalid {field}.windows: at least one window")
    if len(windows.windows) > MAX_WINDOWS:
        raise InvalidInput(f"{field}.windows", f"invalid {field}.windows: at most {MAX_WINDOWS}")
    if windows.min_priority not in _PRIORITIES:
        raise InvalidInput(f"{field}.min_priority", f"invalid {field}.min_priority: 0..3")
    for n, window in enumerate(windows.windows):
        where = f"{field}.windows[{n}]"
        if not window.days or len(set(window.days)) != len(window.days):
            raise InvalidInput(
                f"{where}.days", f"invalid {where}.days: each day once, at least one"
            )
        for name in ("start", "end"):
            value = getattr(window, name)
            if not _CLOCK.fullmatch(value) or (name == "start" and value == "24:00"):
                raise InvalidInput(
                    f"{where}.{name}", f"invalid {where}.{name}: HH:MM, e.g. 08:00 (got {value!r})"
                )
        if window.end <= window.start:
            raise InvalidInput(
                f"{where}.end",
                f"invalid {where}.end: later than start (a window past midnight is two windows)",
            )
    return windows


def holds(windows: SendWindows, priority: int) -> bool:
    """Whether ``windows`` apply to a message of ``priority``."""
    return priority >= windows.min_priority


def next_opening(windows: SendWindows, zone: tzinfo, at: float) -> float:
    """The earliest instant ≥ ``at`` inside one of ``windows``: ``at`` itself when it is
    inside one."""
    today = datetime.fromtimestamp(at, zone).date()
    soonest = float("inf")
    for offset in range(-1, _HORIZON_DAYS):
        day = today + timedelta(days=offset)
        name = WEEKDAYS[day.weekday()]
        for window in windows.windows:
            if name not in window.days:
                continue
            opens, closes = _instant(day, window.start, zone), _instant(day, window.end, zone)
            if opens >= closes:
                continue  # the whole window lies in the spring-forward gap: none that day
            if opens <= at < closes:
                return at
            if opens > at:
                soonest = min(soonest, opens)
    return soonest


def _instant(day: date, clock: str, zone: tzinfo) -> float:
    if clock == "24:00":
        return datetime.combine(day + timedelta(days=1), time(), zone).timestamp()
    hours, minutes = (int(part) for part in clock.split(":"))
    local = datetime.combine(day, time(hours, minutes), zone)
    # A wall time in the spring-forward gap does not exist: it is read with the offset
    # before the change, which lands after the gap (02:30 becomes 03:30). Ambiguous
    # times (fold 0) are their first occurrence.
    return local.timestamp()


def window_from_text(text: str) -> WeeklyWindow:
    """A window written as people write it: ``mon-fri 08:00-20:00``, ``sat,sun
    10:00-13:00``, ``mon,wed-fri 09:00-24:00`` (days by their first three letters, a
    range wrapping past Sunday allowed). Checked as :func:`check_send_windows` checks
    it; :class:`InvalidInput` naming ``send_window`` otherwise."""
    days_text, _, hours = text.strip().lower().partition(" ")
    start, _, end = hours.strip().partition("-")
    days: list[Weekday] = []
    for part in days_text.split(","):
        first, _, last = part.partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise InvalidInput(
                "send_window",
                f"invalid send window {text!r}: days are {', '.join(WEEKDAYS)} "
                "(e.g. mon-fri 08:00-20:00)",
            )
        at, stop = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
        span = range(at, stop + 1) if stop >= at else [*range(at, 7), *range(stop + 1)]
        days.extend(WEEKDAYS[n] for n in span if WEEKDAYS[n] not in days)
    window = WeeklyWindow(days=tuple(days), start=start, end=end)
    try:
        check_send_windows("send_window", SendWindows(tz="UTC", windows=(window,)))
    except InvalidInput as exc:
        raise InvalidInput("send_window", f"invalid send window {text!r}: {exc.reason}") from None
    return window
