"""Exit codes come from one place: what a command returns or raises becomes 0, 1 or 2."""

from __future__ import annotations

import pytest

from mailproxy.domain.errors import MailProxyError, NotFound
from mailproxy.entrypoints.cli.exits import CommandFailed, UsageError, exit_code


def failing(error: Exception) -> None:
    raise error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UsageError("--count must be between 1 and 1000"), 2),
        (CommandFailed("no instance ghost"), 1),
        (NotFound("tenant", "nobody"), 1),
        (MailProxyError("storage is full"), 1),
    ],
    ids=["usage", "command failed", "not found", "any mailproxy error"],
)
def test_a_mailproxy_error_is_its_message_on_stderr_and_its_code(capsys, error, code):
    assert exit_code(failing)(error) == code
    assert capsys.readouterr().err == f"error: {error}\n"


def test_a_command_that_returns_exits_zero_or_with_the_code_it_returns():
    assert exit_code(lambda: None)() == 0
    assert exit_code(lambda: 3)() == 3


def test_other_exceptions_are_not_turned_into_codes():
    with pytest.raises(KeyError):
        exit_code(failing)(KeyError("bug"))
