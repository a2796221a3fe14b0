"""Send windows as the service applies them: the IANA zone looked up by its name, and
the instant a message waits for (:mod:`mailproxy.domain.send_windows` does the reckoning)."""

from __future__ import annotations

import functools
import re
from datetime import tzinfo
from zoneinfo import ZoneInfo

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.model import Account, Tenant
from mailproxy.domain.send_windows import SendWindows, holds, next_opening

#: An IANA zone name (``Europe/Rome``, ``America/Argentina/Buenos_Aires``, ``UTC``): what
#: is looked up is a file under the zone database, so nothing else is.
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}")


@functools.lru_cache(maxsize=256)
def time_zone(name: str) -> tzinfo:
    """The zone called ``name``; :class:`InvalidInput` when there is none."""
    if len(name) <= 64 and _ZONE_NAME.fullmatch(name):
        try:
            return ZoneInfo(name)
        except (ValueError, OSError, LookupError):
            pass
    raise InvalidInput("tz", f"invalid tz: {name!r} is not an IANA time zone (e.g. Europe/Rome)")


def check_zone(field: str, windows: SendWindows | None) -> None:
    """That ``windows`` (when set) name a zone this instance knows."""
    if windows is None:
        return
    try:
        time_zone(windows.tz)
    except InvalidInput as exc:
        raise InvalidInput(f"{field}.tz", f"{field}.{exc.reason}") from None


def windows_of(tenant: Tenant | None, account: Account | None) -> SendWindows | None:
    """The windows a message of ``account`` keeps: the account's own, else its tenant's."""
    if account is not None and account.send_windows is not None:
        return account.send_windows
    return tenant.send_windows if tenant is not None else None


def opening_after(windows: SendWindows | None, priority: int, at: float) -> float | None:
    """When a message of ``priority`` that would go at ``at`` may go by ``windows``, if
    that is later; None when it may go then (no windows, a priority they leave alone, or
    inside one)."""
    if windows is None or not holds(windows, priority):
        return None
    opens = next_opening(windows, time_zone(windows.tz), at)
    return opens if opens > at else None
