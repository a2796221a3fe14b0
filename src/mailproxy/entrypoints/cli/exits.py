"""Exit codes, decided in one place: 0 ok, 1 error, 2 usage.

Commands raise; :func:`exit_code` (around each top-level command, the instance and tenant
commands included, as they run inside ``instances.instance_command``) prints
``error: <message>`` on stderr and returns the code. Mistakes cyclopts catches while
parsing (unknown command or option, bad value) exit 2 through cyclopts itself, as the
same one line (``apps.one_line``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec

from mailproxy.domain.errors import MailProxyError

P = ParamSpec("P")


class CommandFailed(MailProxyError):
    """The command could not do what it was asked (exit 1); the message says why."""


class UsageError(MailProxyError):
    """The command was called wrongly in a way the parser cannot see (exit 2)."""


def code_for(error: MailProxyError) -> int:
    return 2 if isinstance(error, UsageError) else 1


def exit_code(command: Callable[P, int | None]) -> Callable[P, int]:
    """``command`` returning its exit code: 0 when it returns, the code of the mailproxy
    error it raises otherwise (with the message on stderr)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        try:
            result = command(*args, **kwargs)
        except MailProxyError as error:
            print(f"error: {error}", file=sys.stderr)
            return code_for(error)
        return result if isinstance(result, int) else 0

    return run
