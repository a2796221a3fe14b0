"""The send-window options of ``tenants update`` and ``accounts add``: windows written as
people write them, read into the body the HTTP API takes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from cyclopts import Parameter

from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.send_windows import window_from_text
from mailproxy.entrypoints.cli.exits import UsageError

PRIORITY_NAMES = {"immediate": 0, "high": 1, "medium": 2, "low": 3}

SendWindowOption = Annotated[list[str] | None, Parameter(consume_multiple=False)]
ZoneOption = str | None
FromPriorityOption = Literal["immediate", "high", "medium", "low"] | None


def send_windows_body(
    windows: list[str] | None, tz: str | None, from_priority: str | None, clear: bool
) -> dict[str, Any] | msgspec.UnsetType | None:
    """The ``send_windows`` to send: the windows given (with their zone), None to remove
    them (``clear``), or UNSET when no window option was given."""
    if clear:
        if windows or tz or from_priority:
            raise UsageError(
                "--clear-send-windows removes the windows: give no other window option"
            )
        return None
    if not windows:
        if tz or from_priority:
            raise UsageError("--tz and --windows-from go with --send-window")
        return msgspec.UNSET
    if not tz:
        raise UsageError("--send-window needs --tz, the IANA time zone (e.g. Europe/Rome)")
    try:
        parsed = [msgspec.to_builtins(window_from_text(text)) for text in windows]
    except InvalidInput as exc:
        raise UsageError(exc.reason) from None
    body: dict[str, Any] = {"tz": tz, "windows": parsed}
    if from_priority is not None:
        body["min_priority"] = PRIORITY_NAMES[from_priority]
    return body
