"""The Dockerfile cannot be built here; what it runs can: its CMD with its environment and
the ``-e`` variables of the documented ``docker run`` commands, as the container would
run it (its /data volume and /app working directory are folders of the test; GMP_HOST=0.0.0.0
is replaced by 127.0.0.1 and the port by a free one, tests stay on loopback), and its
HEALTHCHECK command against that server."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.system.conftest import free_port
from tests.system.unprivileged import closed_folder

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
#: The first command of the original project's Docker quick start.
ORIGINAL_QUICK_START = "docker run -p 8000:8000 -e GMP_API_TOKEN=your-secret-token mailproxy"


def instruction(name: str) -> str:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return line[len(name) + 1 :].strip()


def documented_docker_runs() -> list[str]:
    """The ``docker run`` commands of the Dockerfile's comments and of the guides."""
    texts = [DOCKERFILE.read_text(encoding="utf-8").replace("\\\n#", " ")]
    texts += [(REPO / "docs" / "guides" / g).read_text() for g in ("running.md", "migrating.md")]
    return [
        re.sub(r"\s+", " ", m.group(0)).strip()
        for text in texts
        for m in re.finditer(r"docker run [^\n`]*", text.replace("\\\n", " "))
    ]


def docker_e(command: str) -> dict[str, str]:
    words = shlex.split(command)
    return dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-e")


class Container:
    """The image's CMD run as a process: the Dockerfile's ENV, then ``-e`` variables;
    /data and /app are folders under ``root``."""

    def __init__(self, root: Path, variables: dict[str, str]) -> None:
        self.data = root / "data"
        self.app = root / "app"
        self.app.mkdir(parents=True, exist_ok=True)
        self.port = str(free_port())
        env = dict(re.findall(r"(GMP_\w+)=(\S+)", instruction("ENV")))
        env.update(variables)
        env.update(GMP_HOST="127.0.0.1", GMP_PORT=self.port)
        env = {k: v.replace("/data/", f"{self.data}/", 1) for k, v in env.items()}
        self.env = {"PATH": os.environ.get("PATH", ""), **env}
        if "PYTHONPATH" in os.environ:  # this checkout's code, as the image installs it
            self.env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        self.command = json.loads(instruction("CMD"))

    def run(self, preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:
        """A container expected to stop by itself."""
        return subprocess.run(
            [sys.executable, "-m", "mailproxy", *self.command[1:]], env=self.env, cwd=self.app,
            capture_output=True, text=True, timeout=60, preexec_fn=preexec_fn,
        )  # fmt: skip

    @contextlib.contextmanager
    def healthy(self) -> Iterator[Path]:
        """The container running until its HEALTHCHECK passes; yields its log, then
        stops it as ``docker stop`` does (SIGTERM), which must end with status 0."""
        log_path = self.app.parent / "container.log"
        with log_path.open("w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "mailproxy", *self.command[1:]],
                env=self.env, cwd=self.app, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        health = json.loads(instruction("HEALTHCHECK").split("CMD", 1)[1])
        try:
            deadline = time.monotonic() + 20
            while True:
                probe = subprocess.run(
                    [sys.executable, *health[1:]], env=self.env, capture_output=True, timeout=10
                )
                if probe.returncode == 0:
                    break
                assert server.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, probe.stderr
                time.sleep(0.2)
            yield log_path
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        assert server.returncode == 0, log_path.read_text()


def test_the_image_runs_as_a_user_with_its_data_in_a_volume():
    env = dict(re.findall(r"(GMP_\w+)=(\S+)", instruction("ENV")))
    assert env["GMP_DB_PATH"].startswith("/data/")
    assert instruction("VOLUME") == '["/data"]'
    assert instruction("USER") == "mailproxy"
    assert "--uid 10001" in instruction("RUN")
    assert json.loads(instruction("CMD"))[:2] == ["mail-proxy", "serve"]


def test_without_a_token_one_is_generated_shown_once_and_kept_in_the_volume(tmp_path):
    container = Container(tmp_path, {})
    with container.healthy() as log:
        token = (container.data / "admin_token").read_text().strip()
        text = log.read_text()
        assert f"admin token (shown once): {token}\n  kept in {container.data}/admin_token\n" in (
            text
        )
        assert f"status page: http://127.0.0.1:{container.port}/ui" in text

    with container.healthy() as log:
        assert f"admin token: kept in {container.data}/admin_token" in log.read_text()
        assert token not in log.read_text()


def test_the_documented_docker_run_commands_start(tmp_path):
    """The original project's first command, and each ``docker run`` the Dockerfile and
    the guides show (but the one on PostgreSQL, tested in test_postgres_processes)."""
    commands = documented_docker_runs()
    assert ORIGINAL_QUICK_START in commands
    sqlite_commands = [c for c in commands if "postgresql://" not in c]
    assert len(sqlite_commands) >= 3
    for n, command in enumerate(sqlite_commands):
        variables = docker_e(command)
        container = Container(tmp_path / str(n), variables)
        with container.healthy() as log:
            configured = "GMP_API_TOKEN" in variables
            first = "admin token: from GMP_API_TOKEN" if configured else "admin token (shown once)"
            assert first in log.read_text(), command
        assert (container.data / "admin_token").exists() is not configured


def test_a_short_token_stops_the_container_with_a_line_naming_the_variable(tmp_path):
    result = Container(tmp_path, {"GMP_API_TOKEN": "secret"}).run()

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: GMP_API_TOKEN is too short: 6 characters, at least 8 (make "
        "one with: openssl rand -hex 16; or leave it unset and one is generated at the first "
        "start)\n"
    )


def test_a_mounted_folder_the_image_user_cannot_write_is_one_line(tmp_path):
    """``docker run -v ./data:/data``: a host folder the image's user (uid 10001) does not
    own, and no token configured."""
    container = Container(tmp_path, {})
    preexec_fn = closed_folder(container.data)

    result = container.run(preexec_fn)

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: the data folder {container.data} is not writable by uid ")
    assert "chown " in line
    assert "GMP_DB_PATH" in line
    assert "admin token" not in result.stdout + result.stderr
    assert list(container.data.iterdir()) == []
