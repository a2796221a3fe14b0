"""The examples of the README and of the guides run as written and do what they say."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.command_line import cli

README = Path(__file__).resolve().parents[2] / "README.md"
GUIDES = README.parent / "docs" / "guides"


def code_blocks(path: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), re.DOTALL)


def run_python(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_the_readme_program_sends_a_message(tmp_path):
    (code,) = code_blocks(README, "python")
    result = run_python(tmp_path, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sent\n"
    assert (tmp_path / "outbox" / "acme" / "main" / "hello.eml").is_file()
    # Run again on the same folder: the stored message is not sent twice, and says so.
    again = run_python(tmp_path, code)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "message: already sent\nsent\n"


def test_the_embedding_guide_example_delivers_and_reports(tmp_path):
    result = run_python(tmp_path, code_blocks(GUIDES / "embedding.md", "python")[0])
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


def test_the_quick_start_installs_from_a_checkout_as_the_readme_does():
    # mailproxy is not on the package index: `pip install mailproxy` fails there (and
    # `mail-proxy` is another project), so the quick start's first command is the README's.
    first_screen = README.read_text(encoding="utf-8").split("---", 1)[0]
    run_it = re.findall(r"```bash\n(.*?)\n```", first_screen, re.DOTALL)[0]
    install = code_blocks(GUIDES / "quick-start.md", "bash")[0]
    assert install.strip() == run_it
    assert "pip install . " in install
    assert (README.parent / "pyproject.toml").is_file()


def test_the_first_message_example_runs_against_the_real_server(tmp_path):
    """The quick start's curl walk-through, run by bash against ``mail-proxy serve``
    started as its first command starts it (generated admin token in the folder)."""
    install, script = code_blocks(GUIDES / "quick-start.md", "bash")
    assert install.strip().endswith("mail-proxy serve")
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
    # Each answer on its own line: the add's reply has no newline of its own.
    assert result.stdout.splitlines()[0] == '{"ok":true,"queued":1,"rejected":[]}'
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


BARE_COMMAND = re.compile(r"(?<![\w/.~-])mail-proxy(?= )")
PATH_NOTE = "`. .venv/bin/activate`"


def test_every_guide_with_bare_commands_says_how_to_get_them_first():
    # The install leaves `mail-proxy` in .venv/bin only: a bare `mail-proxy` is "command
    # not found" unless the guide said how to put it on the PATH before its first use.
    for path in [README, *sorted(GUIDES.glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        first = BARE_COMMAND.search(text)
        if first is None:
            continue
        note = text.find(PATH_NOTE)
        assert 0 <= note < first.start(), f"{path.name}: bare mail-proxy before {PATH_NOTE}"


def test_the_quick_start_points_at_the_line_info_prints(home):
    # `info` prints the instance's folder, not the outbox: the guide names that line.
    text = (GUIDES / "quick-start.md").read_text(encoding="utf-8")
    assert "(the `folder:` line of\n`mail-proxy myserver info`)" in text
    result = cli(home, "box", "info")
    assert f"folder: {home / 'box'}" in result.stdout.splitlines()
