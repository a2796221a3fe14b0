"""``mail-proxy start | list | stop | restart`` as real processes against a temporary
GMP_HOME: instances are created with a private config, run in the background, answer
HTTP, and stop gracefully; a stale pid file is not trusted."""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import pty
import smtplib
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mailproxy.entrypoints.instances import Instance
from tests.system.conftest import free_port
from tests.system.unprivileged import closed_folder

pytestmark = pytest.mark.system


def allow_loopback(home: Path, name: str) -> None:
    """Let the instance reach the SMTP sink: loopback is refused unless allowed."""
    with (home / name / "config.ini").open("a", encoding="utf-8") as config:
        config.write("\n[security]\negress_allow = 127.0.0.0/8\n")


def cli(
    home: Path, *args: str, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "GMP_HOME": str(home)}
    if "PYTHONPATH" in os.environ:  # this checkout's code, in the CLI and the servers it starts
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "mailproxy", *args],
        env=env, capture_output=True, text=True, timeout=90, preexec_fn=preexec_fn,
    )  # fmt: skip


def test_start_list_stop_an_instance(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    started = cli(home, "start", "myserver", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        assert f"myserver running at http://127.0.0.1:{port}" in started.stdout
        config_file = home / "myserver" / "config.ini"
        assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
        parser = configparser.ConfigParser()
        parser.read(config_file)
        token = parser["server"]["api_token"]
        assert f"admin token: {token}" in started.stdout
        answer = httpx.get(
            f"http://127.0.0.1:{port}/tenants", headers={"X-API-Token": token}, timeout=5
        )
        assert answer.json() == {"ok": True, "tenants": []}
        (listed,) = json.loads(cli(home, "list", "--json").stdout)
        assert (listed["name"], listed["running"], listed["url"]) == (
            "myserver", True, f"http://127.0.0.1:{port}"
        )  # fmt: skip
        again = cli(home, "start", "myserver")
        assert "already running" in again.stdout
        assert "admin token" not in again.stdout
    finally:
        stopped = cli(home, "stop", "myserver")
    assert stopped.returncode == 0
    assert stopped.stdout.strip() == "myserver stopped"
    assert json.loads(cli(home, "list", "--json").stdout)[0]["running"] is False
    assert (home / "myserver" / "mail_service.db").is_file()


def test_a_stale_pid_file_is_not_trusted(tmp_path):
    home = tmp_path / "home"
    folder = home / "old"
    folder.mkdir(parents=True)
    (folder / "config.ini").write_text("[server]\nport = 1\napi_token = abcdefgh12345678\n")
    (folder / "mail-proxy.pid").write_text(f"{os.getpid()}\n")  # alive, but not a server
    (listed,) = json.loads(cli(home, "list", "--json").stdout)
    assert listed["running"] is False
    assert not (folder / "mail-proxy.pid").exists()
    assert cli(home, "stop", "old").stdout.strip() == "old was not running"


def test_bad_names_and_unknown_instances_are_one_line_errors(tmp_path):
    bad = cli(tmp_path, "start", "../escape")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: ")
    assert "invalid instance name" in bad.stderr
    missing = cli(tmp_path, "stop", "ghost")
    assert (missing.returncode, missing.stderr.strip()) == (
        1, f"error: no instance ghost in {tmp_path}"
    )  # fmt: skip


def test_the_quick_start_sequence_sends_an_eml_through_smtp(tmp_path, sink):
    handler, smtp_port = sink
    home = tmp_path / "home"
    eml = tmp_path / "welcome.eml"
    eml.write_bytes(
        b"From: App <app@example.com>\r\nTo: ada@example.com\r\nSubject: Hello\r\n\r\nHi Ada\r\n"
    )
    port = free_port()
    Instance(home, "myserver").create("127.0.0.1", port)
    allow_loopback(home, "myserver")
    assert cli(home, "start", "myserver", "--port", str(port)).returncode == 0
    try:
        added = cli(home, "myserver", "tenants", "add", "acme", "--name", "Acme Corp")
        assert added.returncode == 0, added.stderr
        assert "api key: " in added.stdout
        account = cli(
            home, "myserver", "acme", "accounts", "add", "main", "--host", "127.0.0.1",
            "--port", str(smtp_port), "--tls", "off", "--default",
        )  # fmt: skip
        assert account.returncode == 0, account.stderr
        sent = cli(home, "myserver", "acme", "send", str(eml))
        assert sent.stdout.strip() == "queued 1", sent.stderr
        deadline = time.monotonic() + 10
        while not handler.received and time.monotonic() < deadline:
            time.sleep(0.05)
        (message,) = json.loads(cli(home, "myserver", "acme", "messages", "list", "--json").stdout)
        assert (message["id"], message["status"]) == ("welcome", "sent")
        assert handler.received[0].rcpt_tos == ["ada@example.com"]
        assert cli(home, "myserver", "acme", "run-now").stdout.strip() == "ok"
    finally:
        cli(home, "stop", "myserver")
    # Stopped: the same commands work on its database.
    stopped = json.loads(cli(home, "myserver", "acme", "messages", "list", "--json").stdout)
    assert [m["status"] for m in stopped] == ["sent"]


def test_accounts_add_asks_for_what_is_missing_on_a_terminal(tmp_path):
    home = tmp_path / "home"
    Instance(home, "box").create("127.0.0.1", 1)
    allow_loopback(home, "box")
    env = {"PATH": os.environ.get("PATH", ""), "GMP_HOME": str(home)}
    assert cli(home, "box", "tenants", "add", "acme").returncode == 0
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the CLI on a terminal
        os.execve(
            sys.executable,
            [sys.executable, "-m", "mailproxy", "box", "acme", "accounts", "add", "main",
             "--user", "app"],
            env,
        )  # fmt: skip
    transcript = b""
    for prompt, answer in ((b"SMTP host: ", b"127.0.0.1\n"), (b"SMTP port", b"2525\n"),
                           (b"SMTP password: ", b"s3cret\n")):  # fmt: skip
        while prompt not in transcript:
            transcript += os.read(terminal, 1024)
        os.write(terminal, answer)
    with contextlib.suppress(OSError):
        while chunk := os.read(terminal, 1024):
            transcript += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    assert b"s3cret" not in transcript  # the password is not echoed
    (account,) = json.loads(cli(home, "box", "acme", "accounts", "list", "--json").stdout)
    assert (account["host"], account["port"], account["user"], account["has_password"]) == (
        "127.0.0.1", 2525, "app", True
    )  # fmt: skip


def test_start_on_a_port_another_server_answers_fails_and_leaves_nothing(tmp_path, server):
    """Another mailproxy answers ``/health`` on the port: ``start`` must not take its
    answer for its own server's."""
    home = tmp_path / "home"
    port = server[0].rsplit(":", 1)[1]

    started = cli(home, "start", "other", "--port", port)

    assert started.returncode == 1
    assert started.stdout == ""
    assert started.stderr == (
        f"error: other did not start: port {port} on 127.0.0.1 is in use by another "
        "program: choose another with --port\n"
    )
    assert not (home / "other").exists()
    assert json.loads(cli(home, "list", "--json").stdout) == []


def test_a_failed_start_of_an_existing_instance_leaves_no_pid_file(tmp_path):
    home = tmp_path / "home"
    Instance(home, "box").create("127.0.0.1", free_port())
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = str(other.getsockname()[1])
        started = cli(home, "start", "box", "--port", port)
        assert started.returncode == 1
        assert f"port {port} on 127.0.0.1 is in use" in started.stderr
        assert "--port" in started.stderr
        assert len(started.stderr.splitlines()) == 1
    assert not (home / "box" / "mail-proxy.pid").exists()
    (listed,) = json.loads(cli(home, "list", "--json").stdout)
    assert (listed["name"], listed["running"]) == ("box", False)
    retried = cli(home, "start", "box", "--port", str(free_port()))
    try:
        assert retried.returncode == 0, retried.stderr
    finally:
        cli(home, "stop", "box")


def test_a_failed_first_start_in_the_foreground_leaves_no_instance(tmp_path):
    home = tmp_path / "home"
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = str(other.getsockname()[1])
        started = cli(home, "start", "fg", "--foreground", "--port", port)
    assert started.returncode == 1
    assert started.stderr == (
        f"error: port {port} on 127.0.0.1 is in use by another program: choose another "
        "with --port\n"
    )
    assert not (home / "fg").exists()


def test_start_of_a_running_instance_says_a_new_port_needs_a_stop(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    assert cli(home, "start", "box", "--port", str(port)).returncode == 0
    try:
        again = cli(home, "start", "box", "--port", str(free_port()))
    finally:
        cli(home, "stop", "box")
    assert again.returncode == 0
    assert again.stdout.startswith(f"box is already running at http://127.0.0.1:{port} (pid ")
    assert again.stdout.rstrip().endswith("(stop it first to change --host or --port)")


def test_a_port_out_of_range_is_refused_before_anything_is_made(tmp_path):
    started = cli(tmp_path, "start", "box", "--port", "70000")

    assert started.returncode == 2
    assert "--port" in started.stderr
    assert not (tmp_path / "box").exists()


def test_an_unusable_instances_folder_is_one_line_naming_it(tmp_path):
    closed = tmp_path / "closed"
    started = cli(closed, "start", "box", preexec_fn=closed_folder(closed))
    assert started.returncode == 1
    (line,) = started.stderr.splitlines()
    assert line.startswith(f"error: the instance folder {closed}/box is not writable by uid ")
    assert line.endswith("or set GMP_HOME to a writable folder")
    assert list(closed.iterdir()) == []

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")  # a path under a regular file: root cannot make it
    started = cli(blocker / "home", "start", "box")
    assert (started.returncode, started.stderr) == (1, (
        f"error: the instance folder {blocker}/home/box cannot be made: {blocker} is a file, "
        "not a folder, or set GMP_HOME to a writable folder\n"
    ))  # fmt: skip


def test_a_broken_config_file_is_one_line_naming_it(tmp_path):
    home = tmp_path / "home"
    Instance(home, "box").create("127.0.0.1", free_port())
    config_file = home / "box" / "config.ini"
    config_file.write_text("edited by hand\n")
    expected = f"error: cannot read {config_file}: file contains no section headers\n"
    result = cli(home, "start", "box")
    assert (result.returncode, result.stderr) == (1, expected)

    config_file.write_text("[server]\nport = 80OO\napi_token = abcdefgh12345678\n")
    started = cli(home, "start", "box")
    assert (started.returncode, started.stderr) == (1, (
        "error: box did not start: invalid setting server.port: Expected int, got str\n"
    ))  # fmt: skip
    assert not (home / "box" / "mail-proxy.pid").exists()


def test_a_broken_instance_is_listed_as_broken_among_the_healthy_ones(tmp_path):
    home = tmp_path / "home"
    for name in ("alpha", "box", "zulu"):
        Instance(home, name).create("127.0.0.1", 8001)
    config_file = home / "box" / "config.ini"
    config_file.write_text("edited by hand\n")
    reason = f"cannot read {config_file}: file contains no section headers"

    listed = cli(home, "list")
    as_json = cli(home, "list", "--json")

    assert (listed.returncode, listed.stderr) == (0, "")
    assert listed.stdout.splitlines() == [
        f"alpha  {'http://127.0.0.1:8001':<24}  stopped",
        f"box    broken: {reason}",
        f"zulu   {'http://127.0.0.1:8001':<24}  stopped",
    ]
    assert as_json.returncode == 0
    rows = json.loads(as_json.stdout)
    assert [(r["name"], r["error"]) for r in rows] == [
        ("alpha", None), ("box", reason), ("zulu", None)
    ]  # fmt: skip


def test_a_failed_start_with_a_new_port_leaves_the_config_as_it_was(tmp_path):
    home = tmp_path / "home"
    Instance(home, "box").create("127.0.0.1", free_port())
    config_file = home / "box" / "config.ini"
    before = config_file.read_text()
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        busy = str(other.getsockname()[1])
        assert cli(home, "start", "box", "--port", busy).returncode == 1
    assert config_file.read_text() == before
    started = cli(home, "start", "box")
    try:
        assert started.returncode == 0, started.stderr
    finally:
        cli(home, "stop", "box")


def test_start_prints_where_the_status_page_and_the_api_docs_are(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    started = cli(home, "start", "box", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        url = f"http://127.0.0.1:{port}"
        lines = started.stdout.splitlines()
        assert lines[0].startswith(f"box running at {url} (pid ")
        assert lines[2:] == [f"status page: {url}/ui", f"API docs:    {url}/schema"]
        assert httpx.get(f"{url}/schema", timeout=5).status_code == 200
    finally:
        cli(home, "stop", "box")


def test_a_token_rotated_while_running_applies_at_the_next_start(tmp_path):
    """The CLI goes on working on the running instance (which keeps its token, so no
    call is refused nor counted by the authentication throttle) until it restarts."""
    home = tmp_path / "home"
    port = free_port()
    assert cli(home, "start", "box", "--port", str(port)).returncode == 0
    try:
        old = cli(home, "box", "token").stdout.strip()
        rotated = cli(home, "box", "token", "--rotate")
        new = rotated.stdout.strip()
        assert rotated.returncode == 0
        assert len(new) >= 32
        assert new != old
        assert rotated.stderr == (
            "box runs with the earlier token until it restarts: mail-proxy restart box "
            "applies the new one\n"
        )
        for _ in range(15):  # beyond the throttle's allowance of failures
            info = cli(home, "box", "info")
            assert (info.returncode, info.stderr) == (0, ""), info.stderr
        assert cli(home, "box", "token").stdout.strip() == old
        assert cli(home, "restart", "box").returncode == 0
        current = cli(home, "box", "token")
        assert (current.stdout.strip(), current.stderr) == (new, "")
        answer = httpx.get(
            f"http://127.0.0.1:{port}/tenants", headers={"X-API-Token": new}, timeout=5
        )
        assert answer.status_code == 200
        assert cli(home, "box", "info").returncode == 0
    finally:
        cli(home, "stop", "box")
    assert not (home / "box" / "next_api_token").exists()


def test_a_token_rotated_while_stopped_applies_at_once(tmp_path):
    home = tmp_path / "home"
    Instance(home, "box").create("127.0.0.1", 1)
    old = cli(home, "box", "token").stdout.strip()

    rotated = cli(home, "box", "token", "--rotate")

    assert (rotated.returncode, rotated.stderr) == (0, "")
    assert rotated.stdout.strip() != old
    assert cli(home, "box", "token").stdout.strip() == rotated.stdout.strip()
    assert cli(home, "box", "info").returncode == 0


def test_a_first_start_in_the_foreground_shows_the_new_token_once(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "GMP_HOME": str(home)}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    screens = []
    for _ in range(2):
        server = subprocess.Popen(
            [sys.executable, "-m", "mailproxy", "start", "third", "--foreground",
             "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert server.stderr is not None
        screen = []
        try:
            while not screen or not screen[-1].startswith("API docs:"):
                line = server.stderr.readline()
                assert line, f"ended before answering: {screen}"
                screen.append(line.rstrip("\n"))
        finally:
            server.terminate()
            server.communicate(timeout=60)
        screens.append(screen)
    config_file = home / "third" / "config.ini"
    parser = configparser.ConfigParser()
    parser.read(config_file)
    token = parser["server"]["api_token"]
    first, second = ("\n".join(screen) for screen in screens)
    assert f"admin token (shown once): {token}\n  kept in {config_file}\n" in first
    assert token not in second
    assert f"admin token: from [server] api_token in {config_file}" in second


def test_a_config_without_a_server_section_is_one_line_and_rotate_repairs_it(tmp_path):
    home = tmp_path / "home"
    Instance(home, "box").create("127.0.0.1", free_port())
    config_file = home / "box" / "config.ini"
    config_file.write_text("[security]\n")
    expected = (
        f"error: no admin token in {config_file} ([server] api_token): mail-proxy box token "
        "--rotate makes one while box is stopped\n"
    )
    for command in (("box", "token"), ("box", "info"), ("start", "box", "--port", "1")):
        result = cli(home, *command)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", expected)
    assert config_file.read_text() == "[security]\n"
    assert not (home / "box" / "mail-proxy.pid").exists()

    rotated = cli(home, "box", "token", "--rotate")

    assert rotated.returncode == 0
    assert cli(home, "box", "info").returncode == 0


def test_info_shows_where_an_instance_accepts_smtp_submission(tmp_path):
    home = tmp_path / "home"
    port, smtp_port = free_port(), free_port()
    assert cli(home, "start", "box", "--port", str(port)).returncode == 0
    try:
        off = cli(home, "box", "info")
        assert "SMTP submission: off ([submission] port)" in off.stdout.splitlines()
        with (home / "box" / "config.ini").open("a", encoding="utf-8") as config:
            config.write(f"\n[submission]\nport = {smtp_port}\n")
        assert cli(home, "restart", "box").returncode == 0
        shown = f"127.0.0.1:{smtp_port} (no TLS)"
        assert f"SMTP submission: {shown}" in cli(home, "box", "info").stdout.splitlines()
        as_json = json.loads(cli(home, "box", "info", "--json").stdout)
        assert as_json["submission"] == [shown]
        with smtplib.SMTP("127.0.0.1", smtp_port, "client.test", timeout=10) as client:
            assert client.ehlo()[0] == 250
    finally:
        cli(home, "stop", "box")
