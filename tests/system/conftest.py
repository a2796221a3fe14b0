"""Fixtures of the system tests: SMTP sinks on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.smtp_sink import SinkHandler, running_sink


@pytest.fixture
def sink() -> Iterator[tuple[SinkHandler, int]]:
    with running_sink(enable_SMTPUTF8=False) as running:
        yield running


@pytest.fixture
def utf8_sink() -> Iterator[tuple[SinkHandler, int]]:
    with running_sink(enable_SMTPUTF8=True) as running:
        yield running
