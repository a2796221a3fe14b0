"""The real ``mail-proxy serve`` process on a loopback port: HTTP in, SMTP out to aiosmtpd,
exactly as the benchmark starts it, and a graceful stop on SIGTERM; its start, which fails
in one line or shows the first screen."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mailproxy.adapters.sqlite import SqliteStore
from tests.system.conftest import TOKEN, free_port
from tests.system.unprivileged import CAP_NET_BIND_SERVICE, closed_file, closed_folder, without

REPO = Path(__file__).resolve().parents[2]
RUNNING = REPO / "docs" / "guides" / "running.md"

pytestmark = pytest.mark.system


def test_serve_accepts_sends_reports_state_and_stops_gracefully(server, sink):
    url, process = server
    handler, smtp_port = sink
    with httpx.Client(base_url=url, headers={"X-API-Token": TOKEN}, timeout=10) as admin:
        key = admin.post("/tenant", json={"id": "acme"}).json()["api_key"]
        bearer = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=bearer, timeout=10) as tenant:
            check_delivery(admin, tenant, handler, smtp_port)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def check_delivery(admin, tenant, handler, smtp_port):
    account = {"id": "main", "host": "127.0.0.1", "port": smtp_port, "use_tls": False,
               "is_default": True}  # fmt: skip
    assert tenant.post("/account", json=account).status_code == 200
    messages = [
        {"id": f"m{n}", "from": "app@example.com", "to": [f"r{n}@example.com"], "subject": "Hi"}
        for n in range(5)
    ]
    answer = tenant.post("/commands/add-messages", json={"messages": messages})
    assert answer.json() == {"ok": True, "queued": 5, "rejected": []}
    deadline = time.monotonic() + 10
    while len(handler.received) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(r.rcpt_tos[0] for r in handler.received) == [
        f"r{n}@example.com" for n in range(5)
    ]
    while time.monotonic() < deadline:
        record = tenant.get("/messages/m4").json()["message"]
        if record["status"] == "sent":
            break
        time.sleep(0.05)
    assert record["status"] == "sent"
    assert record["why"] is None
    assert admin.get("/status").json()["queue"]["sent"] == 5
    assert tenant.get("/tenants").status_code == 403


# The first hour: every way the start can fail is one line and leaves nothing behind;
# a start that succeeds says where the token is and where to begin.

CLI = [sys.executable, "-m", "mailproxy"]


def base_env(**more: str) -> dict[str, str]:
    """A clean environment (no GMP_ variable of the caller), this checkout's code."""
    env = {"PATH": os.environ.get("PATH", "")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return {**env, **more}


def serve_once(cwd: Path, *args: str, env: dict[str, str] | None = None,
               preexec_fn: Callable[[], None] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """``mail-proxy serve`` that is expected to stop by itself (a failed start)."""
    return subprocess.run(
        [*CLI, "serve", *args], cwd=cwd, env=env or base_env(), capture_output=True,
        text=True, timeout=60, preexec_fn=preexec_fn,
    )  # fmt: skip


@contextlib.contextmanager
def serving(
    cwd: Path, port: int, env: dict[str, str] | None = None, *args: str
) -> Iterator[list[str]]:
    """``mail-proxy serve --port PORT [ARGS]`` in ``cwd`` until its first screen is
    complete; yields that screen's lines (its standard error so far), then stops it
    (SIGTERM)."""
    log_path = cwd / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port), *args], cwd=cwd, env=env or base_env(),
            stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "quick start:" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        lines = log_path.read_text().splitlines()
        yield [ln for ln in lines if not ln.startswith(("INFO:", "{"))]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0, log_path.read_text()


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_client_that_leaves_before_its_answer_does_not_stop_the_server(server):
    # Asked for a page and gone before it is written: the server's write then fails,
    # which once ended serve by SIGPIPE (the command line's default for closed pipes).
    url, process = server
    port = int(url.rsplit(":", 1)[1])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"GET /schema/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        assert process.poll() is None
    assert httpx.get(f"{url}/health").status_code == 200


def test_serve_on_a_busy_port_says_so_in_one_line_and_keeps_no_token(tmp_path):
    with held_port() as port:
        result = serve_once(tmp_path, "--port", str(port))

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is in use by another program: choose another "
        "with --port\n"
    )
    assert not (tmp_path / "admin_token").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_privileged_port_is_one_line_naming_it_and_the_flag(tmp_path):
    port = free_privileged_port()
    result = serve_once(tmp_path, "--port", str(port), preexec_fn=without(CAP_NET_BIND_SERVICE))

    assert result.returncode == 1
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 may not be opened by this user (below 1024, a port "
        "needs privileges): choose another with --port\n"
    )
    assert list(tmp_path.iterdir()) == []


def free_privileged_port() -> int:
    """A port below 1024 that nothing listens on (root can tell; another user cannot
    open any of them)."""
    if os.geteuid() != 0:
        return 1023
    for port in range(1023, 900, -1):
        with socket.socket() as probe, contextlib.suppress(OSError):
            probe.bind(("127.0.0.1", port))
            return port
    pytest.fail("no free port from 901 to 1023")


def test_a_port_out_of_range_is_a_usage_error_before_anything_starts(tmp_path):
    # The kernel would bind 99999 as 34463 (modulo 65536) and serve there.
    result = serve_once(tmp_path, "--port", "99999")

    assert result.returncode == 2
    assert "--port" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_data_folder_is_one_line_naming_it_and_the_fix(tmp_path):
    data = tmp_path / "data"
    preexec_fn = closed_folder(data)  # the `docker run -v ./data:/data` mistake
    result = serve_once(
        tmp_path, "--port", str(free_port()),
        env=base_env(GMP_DB_PATH=str(data / "mail_service.db")), preexec_fn=preexec_fn,
    )  # fmt: skip

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: the data folder {data} is not writable by uid ")
    assert "chown " in line
    assert line.endswith("or set GMP_DB_PATH to a writable place")
    assert "admin token" not in result.stdout + result.stderr
    assert list(data.iterdir()) == []


def test_a_database_this_user_cannot_write_is_one_line_naming_it(tmp_path):
    """A database made by another user (a first start as root, then the image's user):
    SQLite opens it read-only, and the start used to fail at its first write, inside the
    server's start-up, with a traceback and exit 3."""
    database = tmp_path / "mail_service.db"
    asyncio.run(migrated(database))
    preexec_fn = closed_file(database)

    result = serve_once(tmp_path, "--port", str(free_port()), preexec_fn=preexec_fn)

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: the database {database} is not writable by uid ")
    assert line.endswith("or set GMP_DB_PATH to a writable place")
    assert not (tmp_path / "admin_token").exists()


async def migrated(database: Path) -> None:
    store = SqliteStore(database)
    await store.open()
    await store.close()


def test_a_database_path_under_a_file_is_one_line_naming_the_file(tmp_path):
    # A path under a regular file cannot be created, by root either.
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    for configured in ("GMP_DB_PATH", "GMP_STORAGE_DB_PATH"):
        db_path = blocker / "sub" / "mail_service.db"
        result = serve_once(
            tmp_path, "--port", str(free_port()), env=base_env(**{configured: str(db_path)})
        )

        assert result.returncode == 1
        assert result.stderr == (
            f"error: the data folder {db_path.parent} cannot be made: {blocker} is a file, "
            f"not a folder, or set {configured} to a writable place\n"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_an_unreadable_kept_token_is_one_line(tmp_path):
    (tmp_path / "admin_token").mkdir()  # a folder where the token file should be

    result = serve_once(tmp_path, "--port", str(free_port()))

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line == (
        "error: cannot read the admin token kept in ./admin_token: is a directory; make it "
        "readable, or delete it to have a new one generated"
    )


def test_the_first_screen_shows_the_token_once_and_where_to_begin(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(tmp_path, port) as screen:
        token = (tmp_path / "admin_token").read_text().strip()
        assert screen == [
            f"admin token (shown once): {token}",
            "  kept in ./admin_token",
            f"status page: {url}/ui",
            f"API docs:    {url}/schema",
            f"quick start: {REPO / 'docs' / 'guides' / 'quick-start.md'}",  # this checkout's
        ]
        assert httpx.get(f"{url}/ui", follow_redirects=True, timeout=10).status_code == 200
        assert httpx.get(f"{url}/schema", timeout=10).status_code == 200
        assert httpx.get(f"{url}/tenants", headers={"X-API-Token": token}).status_code == 200
    assert (REPO / "docs" / "guides" / "quick-start.md").is_file()

    guide = tmp_path / "docs" / "guides" / "quick-start.md"  # started in a checkout's folder
    guide.parent.mkdir(parents=True)
    guide.write_text("# Quick start\n")
    with serving(tmp_path, port) as again:
        assert again[0] == "admin token: kept in ./admin_token"
        assert token not in "\n".join(again)
        assert again[-1] == "quick start: docs/guides/quick-start.md"
    documented = re.search(
        r"it prints on standard error.*?```text\n(.*?)```", RUNNING.read_text(), re.DOTALL
    )
    assert documented is not None
    shown = textwrap.dedent(documented.group(1)).strip("\n")
    assert shown.replace("3q2rF0yU…", token).replace(":8000", f":{port}") == "\n".join(
        [*screen[:-1], again[-1]]
    )


def test_an_installed_copy_names_no_quick_start_it_does_not_have(tmp_path):
    site = tmp_path / "site"  # the package outside a checkout, as pip installs it
    shutil.copytree(REPO / "src" / "mailproxy", site / "mailproxy")
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(site)}
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)], cwd=tmp_path, env=env, stdout=log,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while "API docs:" not in log_path.read_text():  # the screen is one write
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    screen = [ln for ln in log_path.read_text().splitlines() if not ln.startswith("{")]
    assert screen[-1] == f"API docs:    http://127.0.0.1:{port}/schema"
    assert "quick start" not in log_path.read_text()


def test_what_serve_leaves_in_a_checkout_is_ignored_by_git(tmp_path):
    """Started in a clone (as the README's first command does), ``serve`` leaves its
    token, its database and (with a capture account) an outbox: none shows in git."""
    env = {**base_env(), "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, env=env, check=True)
    (tmp_path / ".gitignore").write_text((REPO / ".gitignore").read_text())
    port = free_port()
    with serving(tmp_path, port):
        admin = {"X-API-Token": (tmp_path / "admin_token").read_text().strip()}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            key = client.post("/tenant", json={"id": "acme"}, headers=admin).json()["api_key"]
            bearer = {"Authorization": f"Bearer {key}"}
            account = {"id": "box", "kind": "capture", "is_default": True}
            assert client.post("/account", json=account, headers=bearer).status_code == 200
            message = {
                "id": "m1",
                "from": "a@example.com",
                "to": ["b@example.com"],
                "subject": "Hi",
            }
            added = client.post(
                "/commands/add-messages", json={"messages": [message]}, headers=bearer
            )
            assert added.json()["queued"] == 1, added.text
            deadline = time.monotonic() + 10
            while not (tmp_path / "outbox" / "acme" / "box" / "m1.eml").exists():
                assert time.monotonic() < deadline
                time.sleep(0.05)
        (tmp_path / "serve.log").unlink()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path, env=env,
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    assert {p.name for p in tmp_path.iterdir()} >= {"admin_token", "mail_service.db", "outbox"}
    assert status.stdout == "?? .gitignore\n"


def test_a_configured_token_is_named_not_shown(tmp_path):
    port = free_port()
    with serving(tmp_path, port, base_env(GMP_API_TOKEN=TOKEN)) as screen:
        assert screen[0] == "admin token: from GMP_API_TOKEN"
        assert TOKEN not in "\n".join(screen)
    assert not (tmp_path / "admin_token").exists()


def test_port_0_takes_any_free_port_and_the_first_screen_names_it(tmp_path):
    with serving(tmp_path, 0, base_env(GMP_API_TOKEN=TOKEN)) as screen:
        (status_line,) = [ln for ln in screen if ln.startswith("status page: ")]
        url = status_line.removeprefix("status page: ").removesuffix("/ui")
        assert re.fullmatch(r"http://127\.0\.0\.1:[1-9][0-9]*", url)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200


def test_smtp_port_0_takes_any_free_port_and_the_first_screen_names_it(tmp_path):
    with serving(tmp_path, 0, base_env(GMP_API_TOKEN=TOKEN), "--smtp-port", "0") as screen:
        (smtp_line,) = [ln for ln in screen if ln.startswith("SMTP submission: ")]
        found = re.fullmatch(
            r"SMTP submission: 127\.0\.0\.1:([1-9][0-9]*) \(no TLS: AUTH from loopback only\)",
            smtp_line,
        )
        assert found, smtp_line
        with smtplib.SMTP("127.0.0.1", int(found[1]), "client.test", timeout=10) as client:
            assert client.ehlo()[0] == 250


def test_a_busy_smtp_port_is_one_line_naming_it_and_the_flag(tmp_path):
    with held_port() as port:
        result = serve_once(tmp_path, "--port", str(free_port()), "--smtp-port", str(port))
    assert result.returncode == 1
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is in use by another program: choose another "
        "with --smtp-port\n"
    )
    assert not (tmp_path / "admin_token").exists()


def test_an_ipv6_address_is_shown_in_brackets(tmp_path):
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    with serving(tmp_path, port, base_env(GMP_API_TOKEN=TOKEN), "--host", "::1") as screen:
        assert f"status page: http://[::1]:{port}/ui" in screen
        assert httpx.get(f"http://[::1]:{port}/health", timeout=10).status_code == 200


def test_serve_tells_a_waiting_supervisor_that_it_answers(tmp_path):
    """systemd's readiness protocol (a ``Type=notify`` unit; ``mail-proxy start``): a
    datagram ``READY=1`` with the server's pid, sent once it answers."""
    address = f"mailproxy-test-{os.getpid()}-{time.monotonic_ns()}"
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as supervisor:
        supervisor.bind(f"\0{address}")
        supervisor.settimeout(30)
        env = base_env(GMP_API_TOKEN=TOKEN, NOTIFY_SOCKET=f"@{address}")
        process = subprocess.Popen(
            [*CLI, "serve", "--port", str(port)], cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            said = supervisor.recv(4096).decode().split("\n")
            answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert "READY=1" in said
    assert f"MAINPID={process.pid}" in said
    assert answer.status_code == 200


def test_a_data_folder_that_is_a_file_says_so(tmp_path):
    blocker = tmp_path / "passwd"  # GMP_DB_PATH=/etc/passwd/x.db
    blocker.write_text("not a folder")
    result = serve_once(
        tmp_path, "--port", str(free_port()), env=base_env(GMP_DB_PATH=str(blocker / "x.db"))
    )

    assert (result.returncode, result.stderr) == (1, (
        f"error: the data folder {blocker} is a file, not a folder, or set GMP_DB_PATH to a "
        "writable place\n"
    ))  # fmt: skip


def test_a_data_folder_that_takes_no_file_says_it_cannot_be_written(tmp_path):
    # /proc exists, and refuses every new file with "no such file or directory".
    result = serve_once(
        tmp_path, "--port", str(free_port()), env=base_env(GMP_DB_PATH="/proc/mail.db")
    )

    assert (result.returncode, result.stderr) == (1, (
        "error: the data folder /proc cannot be written: no file can be created in it, or "
        "set GMP_DB_PATH to a writable place\n"
    ))  # fmt: skip


def test_a_folder_its_owner_cannot_write_suggests_no_chown(tmp_path):
    folder = Path("/sys")  # refuses new files to everyone, root included
    if folder.stat().st_uid != os.geteuid():
        pytest.skip("needs to run as the owner of /sys (root)")
    result = serve_once(
        tmp_path, "--port", str(free_port()), env=base_env(GMP_DB_PATH="/sys/mail.db")
    )

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: the data folder /sys is not writable by uid {os.geteuid()} ")
    assert "chown" not in line


def test_an_unreachable_postgresql_says_why(tmp_path):
    closed = free_port()  # nothing listens there: the connection is refused
    url = f"postgresql://postgres@127.0.0.1:{closed}/postgres?connect_timeout=2"
    result = serve_once(tmp_path, "--port", str(free_port()), env=base_env(GMP_DB_PATH=url))

    assert result.returncode == 1
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: cannot use the database on PostgreSQL: postgres: ")
    assert f'"127.0.0.1", port {closed} failed: Connection refused' in error


def test_a_missing_or_headless_config_file_is_one_line(tmp_path):
    result = serve_once(tmp_path, "--config", "nosuch.ini")
    assert (result.returncode, result.stderr) == (1, "error: no config file nosuch.ini\n")

    (tmp_path / "headless.ini").write_text("port = 8080\n")
    result = serve_once(tmp_path, "--config", "headless.ini")
    assert (result.returncode, result.stderr) == (1, (
        "error: cannot read config file headless.ini: line 1: 'port = 8080' comes before "
        "any [section] header\n"
    ))  # fmt: skip
