"""The README's embedding example runs as written and prints what the README says."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def embedding_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Embedding it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README lost its embedding example"
    return match.group(1)


def test_the_embedding_example_delivers_and_reports(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(embedding_example(), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "1 [('broken', \"invalid address in to: 'not-an-address' (expected local@domain)\")]"
    )
    assert re.fullmatch(r"sent [0-9a-f]{32}@acme\.example", lines[1])
    assert lines[2] == "sent welcome-ada {'user_id': 42}"
    assert (tmp_path / "outbox" / "acme" / "main" / "welcome-ada.eml").is_file()
    assert (tmp_path / "mail_service.db").is_file()


def test_the_first_screen_has_exactly_two_setup_commands():
    first_screen = README.read_text(encoding="utf-8").split("---", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", first_screen, re.DOTALL)
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci


def test_the_first_message_example_runs_against_the_real_server(tmp_path):
    """The README's curl walk-through, run by bash against ``mail-proxy serve`` started
    as command 1 starts it (generated admin token in the working folder)."""
    section = README.read_text(encoding="utf-8").split("## First message over HTTP", 1)[1]
    script = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "MAILPROXY_URL": f"http://127.0.0.1:{port}"}
    server = subprocess.Popen(
        [sys.executable, "-c", "from mailproxy.entrypoints.cli import main; main()",
         "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "admin_token").exists() or not answers(port):
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert result.returncode == 0, result.stderr
    assert '{"ok":true,"queued":1,"rejected":[]}' in result.stdout
    assert '"status":"sent"' in result.stdout
    assert (tmp_path / "outbox" / "acme" / "sandbox" / "hello-1.eml").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
