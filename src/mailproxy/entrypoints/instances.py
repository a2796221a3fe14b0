"""Named instances of the service on this host, for the CLI.

An instance lives in ``$GMP_HOME/<name>/`` (default ``~/.mail-proxy``): ``config.ini``
(written at the first start with a generated admin token, mode 600), ``mail_service.db``,
``mail-proxy.pid`` and ``mail-proxy.log``; ``next_api_token`` (mode 600) holds a token
rotated while the instance runs, moved into ``config.ini`` at its next start (until then
the running server and the CLI keep the token it started with). A pid file is trusted
only when that process is alive and is a mailproxy server; otherwise it is stale and
removed.

A started server says that it answers through systemd's readiness protocol
(``NOTIFY_SOCKET``, a datagram ``READY=1``): ``start`` waits for its own child's word on
a socket of its own, so another program answering on the same port cannot pass for it,
and a ``Type=notify`` systemd unit gets the same signal.
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from mailproxy.domain.errors import InvalidInput, MailProxyError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
FIRST_PORT = 8000


class InstanceInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    path: str
    url: str
    running: bool
    pid: int | None
    #: Where it accepts SMTP submission, ``host:port (STARTTLS)`` (none: it does not).
    submission: list[str] = []
    #: Why the instance cannot be read (its config.ini), when it cannot.
    error: str | None = None


def home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("GMP_HOME") or Path.home() / ".mail-proxy")


class Instance:
    """One named instance under the instances root."""

    def __init__(self, root: Path, name: str) -> None:
        if not NAME.fullmatch(name):
            raise InvalidInput("name", f"invalid instance name {name!r}: A-Z a-z 0-9 _ . -")
        self.name = name
        self.path = root / name

    @property
    def config_file(self) -> Path:
        return self.path / "config.ini"

    @property
    def pid_file(self) -> Path:
        return self.path / "mail-proxy.pid"

    @property
    def log_file(self) -> Path:
        return self.path / "mail-proxy.log"

    @property
    def next_token_file(self) -> Path:
        return self.path / "next_api_token"

    def exists(self) -> bool:
        return self.config_file.is_file()

    def _config(self) -> configparser.ConfigParser:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(self.config_file, encoding="utf-8")
        except configparser.Error as exc:
            reason = str(exc).splitlines()[0].rstrip(".").lower()
            raise MailProxyError(f"cannot read {self.config_file}: {reason}") from None
        return parser

    def create(self, host: str | None, port: int | None) -> None:
        """Write ``config.ini`` with a generated admin token (mode 600) and a free port."""
        writable_folder(self.path, "instance", "set GMP_HOME to a writable folder")
        parser = configparser.ConfigParser(interpolation=None)
        parser["server"] = {
            "host": host or "127.0.0.1",
            "port": str(port or free_port_from(FIRST_PORT)),
            "api_token": secrets.token_urlsafe(32),
        }
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            parser.write(handle)

    def update_server(self, host: str | None, port: int | None) -> None:
        parser = self._config()
        if not parser.has_section("server"):
            parser.add_section("server")
        if host:
            parser["server"]["host"] = host
        if port:
            parser["server"]["port"] = str(port)
        if host or port:
            with self.config_file.open("w", encoding="utf-8") as handle:
                parser.write(handle)

    def rotate_token(self) -> str:
        """A new admin token, returned. A stopped instance takes it at once; a running
        one goes on with the token it started with (which the CLI keeps sending, so it
        is not refused) and takes the new one at its next start."""
        new = secrets.token_urlsafe(32)
        if self.pid() is None:
            self._set_token(new)
            self.next_token_file.unlink(missing_ok=True)
            return new
        self.keep_next_token(new)
        return new

    def keep_next_token(self, token: str) -> None:
        """Keep ``token`` (mode 600) for the next start."""
        self.next_token_file.unlink(missing_ok=True)
        fd = os.open(self.next_token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")

    @property
    def next_token(self) -> str | None:
        """The token rotated while the instance ran, to apply at its next start."""
        try:
            return self.next_token_file.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def apply_next_token(self) -> None:
        """Before a start: the token rotated while the instance ran becomes its token."""
        if (new := self.next_token) is not None:
            self._set_token(new)
            self.next_token_file.unlink(missing_ok=True)

    def _set_token(self, token: str) -> None:
        parser = self._config()
        if not parser.has_section("server"):
            parser.add_section("server")
        parser["server"]["api_token"] = token
        with self.config_file.open("w", encoding="utf-8") as handle:
            parser.write(handle)

    def config_text(self) -> str:
        """``config.ini`` as it is, for :meth:`restore_config` after a failed start."""
        return self.config_file.read_text(encoding="utf-8")

    def restore_config(self, text: str) -> None:
        self.config_file.write_text(text, encoding="utf-8")

    @property
    def url(self) -> str:
        parser = self._config()
        host = parser.get("server", "host", fallback="127.0.0.1")
        return local_url(host, parser.get("server", "port", fallback=str(FIRST_PORT)))

    @property
    def submission(self) -> list[str]:
        """Where the instance accepts SMTP submission (``host:port (how)``), per its
        config.ini; empty when it does not."""
        parser = self._config()
        host = parser.get("submission", "host", fallback="") or parser.get(
            "server", "host", fallback="127.0.0.1"
        )
        tls = bool(parser.get("submission", "cert_file", fallback=""))
        ports = [
            (parser.get("submission", "port", fallback=""), "STARTTLS" if tls else "no TLS"),
            (parser.get("submission", "tls_port", fallback=""), "implicit TLS"),
        ]
        return [f"{local_address(host, port)} ({how})" for port, how in ports if port]

    @property
    def token(self) -> str:
        token = self._config().get("server", "api_token", fallback="")
        if not token:
            raise MailProxyError(
                f"no admin token in {self.config_file} ([server] api_token): mail-proxy "
                f"{self.name} token --rotate makes one while {self.name} is stopped"
            )
        return token

    def pid(self) -> int | None:
        """The pid of the running server, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        if is_mailproxy_process(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def info(self) -> InstanceInfo:
        pid = self.pid()
        return InstanceInfo(
            name=self.name, path=str(self.path), url=self.url, running=pid is not None, pid=pid,
            submission=self.submission,
        )  # fmt: skip

    def start(self, wait_s: float = 30.0) -> int:
        """Start the server in the background and return its pid once it says it answers
        (``READY=1`` from that pid on a socket of this call). Raises
        :class:`MailProxyError` with the server's error line when it exits first, or
        when it does not answer in ``wait_s`` (it is then stopped); no pid file is left."""
        command = [sys.executable, "-m", "mailproxy", "serve", "--config", str(self.config_file)]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GMP_")}
        # An abstract socket (Linux): no file to leave behind, no path length limit; its
        # random name is known only to the child.
        address = f"mailproxy-start-{secrets.token_hex(16)}"
        environment["NOTIFY_SOCKET"] = f"@{address}"
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ready:
            ready.bind(f"\0{address}")
            with self.log_file.open("ab") as log:
                process = subprocess.Popen(
                    command,
                    cwd=self.path,
                    env=environment,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.pid_file.write_text(f"{process.pid}\n", encoding="ascii")
            try:
                self._wait_ready(process, ready, wait_s, log_start)
            except MailProxyError:
                self.pid_file.unlink(missing_ok=True)
                raise
        return process.pid

    def _wait_ready(
        self, process: subprocess.Popen[bytes], ready: socket.socket, wait_s: float, log_start: int
    ) -> None:
        ready.settimeout(0.1)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                said = ready.recv(4096).decode("ascii", errors="replace").split("\n")
            except TimeoutError:
                said = []
            if "READY=1" in said and f"MAINPID={process.pid}" in said:
                return
            if process.poll() is not None:
                raise MailProxyError(f"{self.name} did not start: {self.failure(log_start)}")
        process.terminate()
        raise MailProxyError(
            f"{self.name} did not answer in {wait_s:.0f} s (stopped it); see {self.log_file}"
        )

    def failure(self, log_start: int) -> str:
        """Why the server that wrote the log from ``log_start`` on stopped: its error
        line, else the end of what it wrote."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(log_start)
                lines = log.read().decode("utf-8", errors="replace").strip().splitlines()
        except OSError:
            lines = []
        errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
        if errors:
            return errors[-1]
        return f"{' | '.join(lines[-5:]) or 'no output'} (log: {self.log_file})"

    def stop(self, wait_s: float = 60.0) -> bool:
        """Ask the server to stop (SIGTERM: it finishes in-flight sends) and wait; False
        when it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and is_mailproxy_process(pid):
            time.sleep(0.1)
        if is_mailproxy_process(pid):
            raise MailProxyError(f"{self.name} (pid {pid}) did not stop in {wait_s:.0f} s")
        self.pid_file.unlink(missing_ok=True)
        return True


def instances(root: Path) -> list[Instance]:
    if not root.is_dir():
        return []
    return [
        Instance(root, p.name)
        for p in sorted(root.iterdir())
        if NAME.fullmatch(p.name) and (p / "config.ini").is_file()
    ]


def writable_folder(folder: Path, kind: str, otherwise: str) -> None:
    """Create ``folder`` if needed and prove that this process can write in it, by
    creating a file there: its mode alone does not tell (root ignores it, a read-only
    mount does not show in it). A folder that fails is a :class:`MailProxyError` naming
    it (``the {kind} folder``) and the fix, then ``otherwise`` (the other way out)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise MailProxyError(f"the {kind} folder {unusable(folder, exc)}, or {otherwise}") from None


def writable_files(files: Iterable[Path], kind: str, otherwise: str) -> None:
    """Prove that this process may write each of ``files`` that exists, by opening it
    for writing (nothing is written): SQLite opens a database it may not write read-only,
    and the start then fails at its first write. A file that fails is a
    :class:`MailProxyError` naming it (``the {kind}``) and the fix, then ``otherwise``."""
    for file in files:
        try:
            os.close(os.open(file, os.O_RDWR))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise MailProxyError(f"the {kind} {unusable(file, exc)}, or {otherwise}") from None


def unusable(path: Path, error: OSError) -> str:
    """Why ``path`` cannot be written, and the fix, from the error of trying."""
    path = path.absolute()
    uid = os.geteuid()
    if error.errno in (errno.EACCES, errno.EPERM):
        if owner_of(path) == uid:  # owned already: chown would change nothing
            return (
                f"{path} is not writable by uid {uid} (the user mail-proxy runs as), its "
                "owner: its mode or its mount refuses writes"
            )
        return (
            f"{path} is not writable by uid {uid} (the user mail-proxy runs as): chown "
            f"{uid} it (a mounted folder: on the host)"
        )
    if error.errno == errno.EROFS:
        return f"{path} is on a read-only file system: mount it writable"
    blocker = next((p for p in (path, *path.parents) if p.exists()), path)
    if not blocker.is_dir():
        if blocker == path and error.errno == errno.EEXIST:  # a folder was asked for
            return f"{path} is a file, not a folder"
        if blocker != path:
            return f"{path} cannot be made: {blocker} is a file, not a folder"
    if error.errno == errno.ENOENT and path.is_dir():  # e.g. /proc: no file can be made
        return f"{path} cannot be written: no file can be created in it"
    return f"{path} cannot be used: {(error.strerror or str(error)).lower()}"


def owner_of(path: Path) -> int | None:
    """The uid that owns ``path``, or None when it cannot be read."""
    try:
        return path.stat().st_uid
    except OSError:
        return None


def local_address(host: str, port: int | str) -> str:
    """``host:port`` as a client on this machine reaches a server bound there (a wildcard
    address is reached on loopback; an IPv6 address in brackets)."""
    shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{shown}]:{port}" if ":" in shown else f"{shown}:{port}"


def local_url(host: str, port: int | str) -> str:
    """The URL a client on this machine uses for a server bound to ``host:port``."""
    return f"http://{local_address(host, port)}"


def notify_ready() -> None:
    """Tell the process waiting on ``$NOTIFY_SOCKET`` (``start``, or systemd for a
    ``Type=notify`` unit) that the service answers: the datagram ``READY=1`` with this
    pid. Nothing is sent when the variable is unset; a waiter that is gone is ignored,
    as by systemd's own ``sd_notify``."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):  # the abstract namespace
        address = "\0" + address[1:]
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify,
        contextlib.suppress(OSError),
    ):
        notify.sendto(f"READY=1\nMAINPID={os.getpid()}\n".encode("ascii"), address)


def is_mailproxy_process(pid: int) -> bool:
    """Is ``pid`` alive and a mailproxy server (not a recycled pid)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    if state.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie has exited
        return False
    return b"mailproxy" in cmdline and b"serve" in cmdline


def free_port_from(first: int) -> int:
    for port in range(first, first + 100):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise MailProxyError(f"no free port from {first} to {first + 99}")
