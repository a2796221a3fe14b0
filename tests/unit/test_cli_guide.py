"""The command-line sessions of the quick start are what the console script asks and
prints: each ``$ mail-proxy ...`` of its console blocks is run on a pseudo-terminal with
the answers the guide types, and shows the guide's questions and lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from mailproxy.entrypoints.instances import Instance
from tests.command_line import Terminal

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "quick-start.md"
#: The line each command prints when it is done: the questions come before it.
RESULT = re.compile(r"tenant \S+ created|account \S+ saved|queued \d+")
HIDDEN = ("SMTP password:", "Bearer token:", "Basic-auth password:")


def sessions() -> list[tuple[str, list[str]]]:
    """Each command of the guide's console blocks with the lines shown after it."""
    text = GUIDE.read_text(encoding="utf-8")
    found: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                found.append((line[2:], []))
            else:
                found[-1][1].append(line)
    return found


def test_the_guide_has_the_interactive_sessions():
    commands = [command for command, _ in sessions()]
    assert commands.count("mail-proxy myserver tenants add") == 1
    assert commands.count("mail-proxy myserver acme accounts add") == 2


def test_every_session_of_the_guide_is_what_the_terminal_shows(tmp_path):
    home = tmp_path / "home"
    Instance(home, "myserver").create("127.0.0.1", 1)
    (tmp_path / "hello.eml").write_bytes(
        b"From: app@example.com\r\nTo: ada@example.com\r\nSubject: Hello\r\n\r\nHi\r\n"
    )
    for command, lines in sessions():
        words = shlex.split(command)
        assert words[0] == "mail-proxy"
        terminal = Terminal(home, *words[1:], cwd=tmp_path)
        done = next(i for i, line in enumerate(lines) if RESULT.fullmatch(line))
        for question in lines[:done]:
            if question.startswith(HIDDEN):
                terminal.answer(question + " ", "guide-s3cret", hidden=True)
            elif question.endswith(":"):
                terminal.answer(question + " ", "")
            else:
                prompt, answer = question.rsplit(": ", 1)
                terminal.answer(prompt + ": ", answer)
        assert terminal.finish() == 0, terminal.transcript
        shown = terminal.lines()
        for line in lines[done:]:
            # A <placeholder> of the guide stands for a value that differs each time.
            pattern = re.sub(r"<[^>]*>", r"\\S+", re.escape(line))
            assert any(re.fullmatch(pattern, s) for s in shown), f"{line!r} not in {shown}"
        assert "guide-s3cret" not in terminal.transcript
