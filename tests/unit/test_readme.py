"""The README's embedding example runs as written and prints what the README says."""

from __future__ import annotations

import re
import subprocess
import sys
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
