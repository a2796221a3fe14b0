"""The entrypoints' log rendering: one JSON object per line with the event, its fields,
level, logger and time; readable lines on request."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import logging
from mailproxy.entrypoints.logs import configure_logging
configure_logging("info", "{fmt}")
logging.getLogger("mailproxy").info(
    "delivery.sent", extra={{"tenant": "t1", "account": "a1", "attempt": 1, "smtp_code": 250,
                             "peer": ValueError("not JSON")}}
)
logging.getLogger("mailproxy").debug("hidden.event")
"""


def render(fmt: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(fmt=fmt)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_json_lines_carry_the_event_and_its_fields():
    (line,) = render("json").strip().splitlines()
    event = json.loads(line)
    assert {k: event[k] for k in ("event", "tenant", "account", "attempt", "smtp_code")} == {
        "event": "delivery.sent", "tenant": "t1", "account": "a1", "attempt": 1, "smtp_code": 250
    }  # fmt: skip
    assert (event["level"], event["logger"]) == ("info", "mailproxy")
    assert event["timestamp"].endswith("Z")
    assert event["peer"] == "ValueError('not JSON')"  # no JSON form: its repr


def test_console_lines_are_readable():
    text = render("console")
    assert "delivery.sent" in text
    assert "tenant" in text
    assert "hidden.event" not in text
