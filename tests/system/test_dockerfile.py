"""The Dockerfile cannot be built here; what it runs can: its CMD with its environment
(GMP_HOST=0.0.0.0 is replaced by 127.0.0.1, tests stay on loopback), and its HEALTHCHECK
command against that server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.system.conftest import free_port

pytestmark = pytest.mark.system

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def instruction(name: str) -> str:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith(name + " ")]
    return line[len(name) + 1 :].strip()


def test_the_image_command_serves_and_its_healthcheck_passes(tmp_path):
    env_text = instruction("ENV")
    env = dict(re.findall(r"(GMP_\w+)=(\S+)", env_text))
    assert env["GMP_DB_PATH"].startswith("/data/")
    assert "USER" in DOCKERFILE.read_text()
    assert "HEALTHCHECK" in DOCKERFILE.read_text()
    command = json.loads(instruction("CMD"))
    assert command[:2] == ["mail-proxy", "serve"]
    port = str(free_port())
    run_env = {
        "PATH": os.environ.get("PATH", ""),
        "GMP_DB_PATH": str(tmp_path / "mail_service.db"),
        "GMP_HOST": "127.0.0.1",
        "GMP_PORT": port,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "mailproxy", *command[1:]],
        env=run_env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    health = json.loads(instruction("HEALTHCHECK").split("CMD", 1)[1])
    try:
        deadline = time.monotonic() + 20
        while True:
            probe = subprocess.run(
                [sys.executable, *health[1:]], env=run_env, capture_output=True, timeout=10
            )
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, probe.stderr
            time.sleep(0.2)
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert server.returncode == 0
    assert "admin token (shown once" in output
    assert (tmp_path / "admin_token").is_file()
