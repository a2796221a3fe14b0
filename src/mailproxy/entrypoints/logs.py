"""Logging setup for the entrypoints (and only them).

The library logs through the standard ``logging`` module — an event name with stable
dotted form (``delivery.sent``, ``report.failed``) as the message and its fields in
``extra`` — so an application embedding it keeps control of its logs. The entrypoints
render those records with structlog: JSON lines in production, readable lines on a
terminal (``logging.format``: json, console, auto), with the request id of the HTTP
request bound in context.

Every record goes through that one renderer, the server's and the libraries' included:
``serve`` leaves uvicorn's loggers unconfigured (``log_config=None``), so its start and
stop lines are JSON events like the others, and ``mail-proxy serve | jq`` reads every
line (``serve`` logs to standard output; what it says to a person goes to standard
error). The HTTP client libraries are held at WARNING whatever the level: httpx logs every
request line at INFO with its full URL, and an attachment URL's query string is often its
credential (a presigned signature); httpcore's DEBUG lines add headers.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import msgspec
import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


_encoder = msgspec.json.Encoder(enc_hook=repr)

#: Loggers that would write secrets or personal data at INFO or DEBUG (full request URLs,
#: headers; aiosmtpd's ``mail.log``: every SMTP command with its addresses, and the
#: message lines).
QUIET_LOGGERS = ("httpx", "httpcore", "hpack", "mail.log")


def _json_line(event: dict[str, object], **_: object) -> str:
    """One event as JSON (msgspec: a fraction of the cost of ``json.dumps`` for every
    delivery line); values JSON has no form for are written as their ``repr``."""
    return _encoder.encode(event).decode()


def _without_color_message(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """uvicorn passes each message a second time, with terminal colour codes, as the
    ``color_message`` extra: the event already says it."""
    event.pop("color_message", None)
    return event


#: Loggers shown under another name: uvicorn's general logger is ``uvicorn.error``, its
#: start and stop lines included, and those are not errors.
SHOWN_LOGGER_NAMES = {"uvicorn.error": "uvicorn"}


def _shown_logger_name(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    name = event.get("logger")
    if isinstance(name, str) and name in SHOWN_LOGGER_NAMES:
        event["logger"] = SHOWN_LOGGER_NAMES[name]
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Render every log record of the process on ``stream`` (standard error unless
    given) at ``level``: JSON lines, or readable ones for ``console`` (``auto``: when the
    stream is a terminal)."""
    stream = sys.stderr if stream is None else stream
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(serializer=_json_line)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _shown_logger_name,
        structlog.stdlib.ExtraAdder(),
        _without_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, LEVELS[level]))
