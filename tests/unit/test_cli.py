"""The ``mail-proxy`` command line, run as a real process."""

from __future__ import annotations

import json
import subprocess
from email import message_from_bytes, policy
from pathlib import Path

from mailproxy import __version__
from tests.command_line import COMMAND, environment


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        env=environment(cwd / "home"),
    )  # fmt: skip


def test_demo_delivers_every_message_into_eml_files(tmp_path):
    result = run("demo", "--dir", str(tmp_path / "d"), "--count", "8", "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["queued"] == 8
    assert summary["rejected"] == []
    assert summary["statuses"] == {"sent": 8}
    assert len(summary["files"]) == 8
    parsed = [
        message_from_bytes(Path(f).read_bytes(), policy=policy.default) for f in summary["files"]
    ]
    subjects = {str(m["Subject"]) for m in parsed}
    assert "Grüße, 你好 — message 2" in subjects
    assert any(m.is_multipart() for m in parsed)
    assert Path(summary["database"]).is_file()


def test_demo_prints_where_the_files_are(tmp_path):
    result = run("demo", "--dir", str(tmp_path / "d"), "--count", "3", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "queued 3 messages" in result.stdout
    assert str((tmp_path / "d" / "outbox" / "demo" / "sandbox").resolve()) in result.stdout


def test_demo_refuses_a_count_out_of_range_with_usage_exit_code(tmp_path):
    result = run("demo", "--dir", str(tmp_path / "d"), "--count", "0", cwd=tmp_path)

    assert result.returncode == 2
    assert "--count" in result.stderr
    assert not (tmp_path / "d").exists()


def test_version_is_printed(tmp_path):
    result = run("--version", cwd=tmp_path)

    assert result.returncode == 0
    assert __version__ in result.stdout


def test_serve_refuses_insecure_on_a_public_address(tmp_path):
    result = run("serve", "--insecure", "--host", "0.0.0.0", cwd=tmp_path)

    assert result.returncode == 2
    assert "loopback" in result.stderr


def test_demo_in_a_folder_it_cannot_make_is_one_line_naming_it(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")

    as_file = run("demo", "--dir", str(a_file), cwd=tmp_path)
    below_file = run("demo", "--dir", str(a_file / "sub"), cwd=tmp_path)

    assert (as_file.returncode, as_file.stdout) == (1, "")
    assert as_file.stderr == (
        f"error: the demo folder {a_file} is a file, not a folder, or choose another with --dir\n"
    )
    assert (below_file.returncode, below_file.stdout) == (1, "")
    assert below_file.stderr == (
        f"error: the demo folder {a_file / 'sub'} cannot be made: {a_file} is a file, not a "
        "folder, or choose another with --dir\n"
    )
    assert a_file.read_text() == "not a folder\n"
