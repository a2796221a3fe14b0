"""The ``mail-proxy`` console script run as a real process against a GMP_HOME of the
test's own: on pipes (:func:`cli`) or on a pseudo-terminal (:class:`Terminal`), as a
person at a terminal runs it."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

COMMAND = [sys.executable, "-m", "mailproxy"]


def environment(home: Path) -> dict[str, str]:
    """A bare environment with GMP_HOME, and PYTHONPATH passed through so the process
    imports the code under test."""
    env = {"PATH": os.environ.get("PATH", ""), "GMP_HOME": str(home), "LANG": "C.UTF-8"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def cli(
    home: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``mail-proxy ARGS`` with pipes for standard input, output and error (and the
    variables of ``env`` besides the bare environment)."""
    return subprocess.run(
        [*COMMAND, *args], env=environment(home) | (env or {}), input=stdin,
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip


class Terminal:
    """``mail-proxy ARGS`` on a pseudo-terminal of 100 columns: standard input, output and
    error are the terminal. :meth:`answer` waits for a prompt and types a line;
    :meth:`finish` reads the rest and returns the exit code. ``transcript`` is everything
    the terminal showed (typed text included, where the terminal echoes it)."""

    def __init__(self, home: Path, *args: str, cwd: Path | None = None) -> None:
        self.fd, child = os.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        env = environment(home) | {"TERM": "xterm-256color"}
        self.process = subprocess.Popen(
            [*COMMAND, *args], env=env, stdin=child, stderr=child,
            stdout=child, start_new_session=True, cwd=cwd,
        )  # fmt: skip
        os.close(child)
        self.transcript = ""
        self._answered = 0  # where the next prompt is looked for in the transcript

    def read_until(self, text: str, timeout_s: float = 30) -> None:
        """Wait until the terminal shows ``text`` after the last answered prompt."""
        deadline = time.monotonic() + timeout_s
        while text not in self.transcript[self._answered :]:
            ended = not self._read(0.1) and self.process.poll() is not None
            if ended or time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} never shown; the terminal showed:\n{self.transcript}"
                )

    def answer(self, prompt: str, line: str, *, hidden: bool = False) -> None:
        """Wait for ``prompt``, then type ``line`` and Enter. ``hidden``: first wait until
        the terminal stops echoing, as it does for a password (typed earlier, the line
        would be echoed, then discarded when echo is turned off)."""
        self.read_until(prompt)
        self._answered = self.transcript.index(prompt, self._answered) + len(prompt)
        deadline = time.monotonic() + 30
        while hidden and termios.tcgetattr(self.fd)[3] & termios.ECHO:
            if time.monotonic() > deadline:
                raise AssertionError(f"{prompt!r} is answered with echo on")
            time.sleep(0.01)
        os.write(self.fd, line.encode() + b"\r")

    def lines(self) -> list[str]:
        """The transcript as the lines left on the screen: escape sequences out, and of
        a line redrawn after a carriage return (a progress bar), its last drawing."""
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.transcript).replace("\r\n", "\n")
        return [line.rsplit("\r", 1)[-1] for line in plain.split("\n")]

    def type_end_of_input(self) -> None:
        """Ctrl-D at the start of a line."""
        os.write(self.fd, b"\x04")

    def finish(self, timeout_s: float = 60) -> int:
        """Read what the terminal shows until the process ends; its exit code."""
        deadline = time.monotonic() + timeout_s
        while self._read(0.1) or self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"still running; the terminal showed:\n{self.transcript}")
        os.close(self.fd)
        return self.process.wait()

    def _read(self, timeout_s: float) -> bool:
        """Add what the terminal shows within ``timeout_s`` to the transcript; whether
        there was anything."""
        ready, _, _ = select.select([self.fd], [], [], timeout_s)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # EIO: every process closed the terminal
            return False
        self.transcript += chunk.decode(errors="replace")
        return bool(chunk)
