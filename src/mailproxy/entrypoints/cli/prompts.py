"""Asking a person at a terminal for what a command was not given.

A command asks only when standard input is a terminal (:func:`interactive`); otherwise a
missing value is a usage error (exit 2) naming the option to give. Questions and their
hints go to stderr, so ``--json`` output on stdout stays clean. Every question re-asks
until its answer is valid; Ctrl-D ends the command as a usage error.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import rich.console
import rich.text

from mailproxy.domain.errors import InvalidInput
from mailproxy.entrypoints.cli.exits import UsageError

T = TypeVar("T")

#: Where questions go: stderr, so that standard output holds only the result.
TERMINAL = rich.console.Console(stderr=True, highlight=False)


def interactive() -> bool:
    """Whether to ask: standard input is a terminal a person types on."""
    return sys.stdin.isatty()


def ask(
    question: str,
    *,
    default: str | None = None,
    blank: str | None = None,
    hidden: bool = False,
    choices: Sequence[str] = (),
) -> str:
    """One answer to ``question``. Enter alone takes ``default`` when there is one, or
    the empty string when ``blank`` says what that means (``no limit``); otherwise an
    answer is required. ``hidden`` does not echo it (passwords); ``choices`` are the
    only answers accepted."""
    hint = f" [{'/'.join(choices)}]" if choices else ""
    if default is not None:
        hint += f" ({default})"
    elif blank is not None:
        hint += f" (empty: {blank})"
    while True:
        try:
            answer = (
                # getpass turns echo off before it shows the question: nothing typed
                # early is echoed.
                getpass.getpass(f"{question}{hint}: ", stream=sys.stderr) if hidden
                else TERMINAL.input(rich.text.Text(f"{question}{hint}: "))
            )  # fmt: skip
        except EOFError:
            TERMINAL.print()
            raise UsageError(f"no answer to: {question}") from None
        answer = answer.strip() or (default if default is not None else "")
        if not answer and blank is None:
            TERMINAL.print("  an answer is needed")
        elif choices and answer not in choices:
            TERMINAL.print(f"  one of: {', '.join(choices)}")
        else:
            return answer


def ask_as(
    parse: Callable[[str], T],
    question: str,
    *,
    default: str | None = None,
    blank: str | None = None,
) -> T:
    """An answer to ``question`` (as :func:`ask` takes it) that ``parse`` accepts; it
    raises ValueError or the domain's InvalidInput otherwise, whose message is shown
    before asking again."""
    while True:
        try:
            return parse(ask(question, default=default, blank=blank))
        except (ValueError, InvalidInput) as error:
            TERMINAL.print(f"  {error}")


def count(answer: str) -> int | None:
    """A count above 0, or None for no answer."""
    if not answer:
        return None
    if not answer.isdigit() or int(answer) == 0:
        raise ValueError("a whole number above 0, or nothing")
    return int(answer)


def yes_no(question: str, default: bool) -> bool:
    return ask(question, default="yes" if default else "no", choices=("yes", "no")) == "yes"


def required(value: T | None, what: str) -> T:
    """``value``; when it is missing and nobody can be asked, the usage error saying
    ``what`` is missing."""
    if value is None:
        raise UsageError(f"missing {what} (standard input is not a terminal: nothing is asked)")
    return value
