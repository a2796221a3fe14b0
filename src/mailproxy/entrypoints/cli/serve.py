"""``mail-proxy serve``: the HTTP service in the foreground, with its admin token.

Everything that can stop the start is tried before the service answers, and each failure
is one line (exit 1): the settings, the port (taken first, so that a busy port leaves
nothing behind), the data folder, the database. A generated admin token is written and
shown only once the service answers; then the first screen says where the token is kept
and where the status page, the API docs and (in a checkout) the quick start are.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Annotated

import cyclopts
import msgspec
import uvicorn

from mailproxy.bootstrap import build_proxy, check_storage
from mailproxy.config import Settings, load_settings, origin_of
from mailproxy.domain.access import MIN_ADMIN_TOKEN
from mailproxy.entrypoints.cli.apps import app
from mailproxy.entrypoints.cli.exits import CommandFailed, UsageError, exit_code
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.instances import (
    local_address,
    local_url,
    notify_ready,
    writable_files,
    writable_folder,
)
from mailproxy.entrypoints.logs import configure_logging
from mailproxy.entrypoints.smtp import submission_listening
from mailproxy.mail_settings import is_loopback_host
from mailproxy.service import MailProxy

#: A TCP port: anything else is a usage error before anything starts (the kernel would
#: take 99999 modulo 65536).
Port = Annotated[int, cyclopts.Parameter(validator=cyclopts.validators.Number(gte=1, lte=65535))]
#: A port to listen on, or 0: any free one (the first screen shows which).
ListenPort = Annotated[
    int, cyclopts.Parameter(validator=cyclopts.validators.Number(gte=0, lte=65535))
]

#: The quick start guide, in a checkout: the package has no page of its own on the web.
QUICK_START = Path("docs", "guides", "quick-start.md")


def quick_start() -> Path | None:
    """The quick start guide under the current folder, else in the checkout this code
    runs from; None for an installed copy, which has no guide to point to."""
    checkout = Path(__file__).resolve().parents[4]
    return next((p for p in (QUICK_START, checkout / QUICK_START) if p.is_file()), None)


class AdminToken(msgspec.Struct, frozen=True, kw_only=True):
    """The admin token ``serve`` runs with, and where the operator finds it again."""

    value: str
    #: ``kept in ./admin_token``, ``from GMP_API_TOKEN``, ``from [server] api_token in FILE``.
    where: str
    #: Generated at this start: written here (mode 600) once the service answers.
    new_file: Path | None = None
    #: Generated before this start and not shown yet (a new instance's): shown once.
    unseen: bool = False


def shown_path(path: Path) -> str:
    """``path`` as the operator would type it here: ``./admin_token`` under the working
    directory, absolute elsewhere."""
    absolute = path.absolute()
    try:
        return f"./{absolute.relative_to(Path.cwd())}"
    except ValueError:
        return str(absolute)


def listen(host: str, port: int, option: str = "--port") -> socket.socket:
    """A socket bound to ``host:port`` (bound as uvicorn binds it); a port that is taken
    or closed to this user is a :class:`CommandFailed` naming it and ``option``, the
    setting that chooses another."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandFailed(
                f"port {port} on {host} is in use by another program: choose another with {option}"
            ) from None
        if exc.errno == errno.EACCES:
            raise CommandFailed(
                f"port {port} on {host} may not be opened by this user (below 1024, a port "
                f"needs privileges): choose another with {option}"
            ) from None
        reason = exc.strerror or str(exc)
        raise CommandFailed(
            f"cannot listen on {host} port {port}: {reason.lower()} (see --host, {option})"
        ) from None
    return listener


def check_data_dir_of(settings: Settings, config: Path | None, *, keeps_token: bool) -> None:
    """The data folder must be writable when it holds the SQLite database (and so must
    the database's files), or the admin token about to be generated."""
    if not settings.on_postgres and settings.db_path != ":memory:":
        db_setting = origin_of("storage.db_path", config)
        db_setting = "GMP_DB_PATH" if db_setting == "storage.db_path" else db_setting
        otherwise = f"set {db_setting} to a writable place"
        writable_folder(settings.data_dir, "data", otherwise)
        database = Path(settings.db_path)
        journals = (database.with_name(database.name + end) for end in ("-wal", "-shm"))
        writable_files((database, *journals), "database", otherwise)
    elif keeps_token and not settings.server.api_token:
        writable_folder(settings.data_dir, "data", "set GMP_API_TOKEN (none is kept then)")


def admin_token_for(settings: Settings, config: Path | None) -> AdminToken:
    """The configured admin token, else the one generated at an earlier start (kept in
    ``admin_token`` in the data folder, mode 600), else a new one (not yet written)."""
    if settings.server.api_token:
        origin = origin_of("server.api_token", config)
        return AdminToken(value=settings.server.api_token, where=f"from {origin}")
    token_file = settings.data_dir / "admin_token"
    try:
        kept = token_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        new = secrets.token_urlsafe(32)
        return AdminToken(value=new, where=f"kept in {shown_path(token_file)}", new_file=token_file)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CommandFailed(
            f"cannot read the admin token kept in {shown_path(token_file)}: {reason.lower()}; "
            "make it readable, or delete it to have a new one generated"
        ) from None
    if len(kept) < MIN_ADMIN_TOKEN:
        raise CommandFailed(
            f"the admin token kept in {shown_path(token_file)} is shorter than {MIN_ADMIN_TOKEN} "
            "characters: delete the file to have a new one generated"
        )
    return AdminToken(value=kept, where=f"kept in {shown_path(token_file)}")


def keep(token: AdminToken) -> None:
    """Write a generated token to its file, readable by this user only."""
    if token.new_file is None:
        return
    try:
        fd = os.open(token.new_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token.value + "\n")
    except OSError as exc:
        raise CommandFailed(f"cannot keep the admin token in {token.new_file}: {exc}") from None


def first_screen(token: AdminToken | None, url: str, more: Sequence[str] = ()) -> str:
    """What ``serve`` prints once it answers: the admin token (itself only when just
    generated) and where it is kept, and the pages to start from."""
    if token is None:
        lines = ["admin token: none (--insecure: every caller is the admin)"]
    elif token.new_file is not None or token.unseen:
        lines = [f"admin token (shown once): {token.value}", f"  {token.where}"]
    else:
        lines = [f"admin token: {token.where}"]
    lines += [f"status page: {url}/ui", f"API docs:    {url}/schema", *more]
    guide = quick_start()
    if guide is not None:
        lines.append(f"quick start: {guide}")
    return "\n".join(lines)


@app.command
@exit_code
def serve(
    *,
    config: Path | None = None,
    host: str | None = None,
    port: ListenPort | None = None,
    smtp_port: ListenPort | None = None,
    insecure: bool = False,
) -> None:
    """Run the HTTP service in the foreground until SIGTERM or Ctrl-C, which stop
    claiming and let in-flight sends finish.

    Without a configured admin token (``GMP_API_TOKEN`` or ``[server] api_token``) one is
    generated at the first start, printed once, and kept in ``admin_token`` beside the
    database. Once the service answers, it prints where the token is, and the addresses
    of the status page and the API docs. A start that fails (a port in use, a folder it
    cannot write in, a bad setting) is one line and exit 1, and keeps no token.

    Parameters
    ----------
    config
        config.ini to read.
    host
        Address to bind (default: server.host, 127.0.0.1).
    port
        Port to bind (default: server.port, 8000; 0: any free port).
    smtp_port
        Accept SMTP submission on this port too (default: submission.port, none; 0: any
        free port); STARTTLS with submission.cert_file and key_file.
    insecure
        Serve without any token (every caller is the admin); only on a loopback address.
    """
    serve_until_stopped(config, host, port, smtp_port=smtp_port, insecure=insecure)


def serve_until_stopped(
    config: Path | None,
    host: str | None = None,
    port: int | None = None,
    *,
    smtp_port: int | None = None,
    insecure: bool = False,
    unseen_token: bool = False,
) -> None:
    """``serve``'s work; ``unseen_token``: the configured token was just generated (a new
    instance's), so the first screen shows it once."""
    # The command line ends quietly on a closed pipe (SIGPIPE's default, set in main);
    # a server must not: a client that goes away mid-answer is that request's error.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    settings = load_settings(config)
    bind_host = host or settings.server.host
    bind_port = settings.server.port if port is None else port
    if insecure and not is_loopback_host(bind_host):
        raise UsageError(f"--insecure only on a loopback address, not {bind_host}")
    raise_open_file_limit()
    if smtp_port is not None:
        submission = msgspec.structs.replace(settings.submission, port=smtp_port)
        settings = msgspec.structs.replace(settings, submission=submission)
    with listen(bind_host, bind_port) as listener, contextlib.ExitStack() as smtp_sockets:
        submission_sockets = [
            smtp_sockets.enter_context(listen(*where)) if where is not None else None
            for where in submission_addresses(settings, bind_host)
        ]
        check_data_dir_of(settings, config, keeps_token=not insecure)
        token = None if insecure else admin_token_for(settings, config)
        if token is not None and unseen_token and config is not None:
            token = msgspec.structs.replace(token, where=f"kept in {config}", unseen=True)
        settings = msgspec.structs.replace(
            settings,
            server=msgspec.structs.replace(
                settings.server, api_token=None if token is None else token.value
            ),
        )
        configure_logging(settings.logging.level, settings.logging.format, sys.stdout)
        asyncio.run(check_storage(settings))
        url = local_url(bind_host, listener.getsockname()[1])
        smtp_lines = submission_lines(settings, submission_sockets)

        def announce() -> None:
            if token is not None:
                keep(token)
            print(first_screen(token, url, smtp_lines), file=sys.stderr, flush=True)
            notify_ready()

        run_server(settings, insecure, listener, announce, submission_sockets)


def raise_open_file_limit() -> None:
    """Every connection, HTTP or SMTP, holds a file descriptor: the soft limit (often
    1,024) is raised to the hard one, as servers do, so that the listeners' own caps
    decide how many connections there are, not a default."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass  # kept as it is: the system does not allow more


def submission_addresses(settings: Settings, http_host: str) -> list[tuple[str, int, str] | None]:
    """Where SMTP submission listens: (host, port, the option that moves it) for the
    STARTTLS port and the implicit-TLS port, None for one that is off."""
    options = settings.submission
    host = options.host or http_host
    return [
        None if options.port is None else (host, options.port, "--smtp-port"),
        None if options.tls_port is None else (host, options.tls_port, "submission.tls_port"),
    ]


def submission_lines(settings: Settings, sockets: list[socket.socket | None]) -> list[str]:
    """The first screen's lines about SMTP submission (none when it is off)."""
    plain, implicit = sockets
    options = settings.submission
    lines = []
    if plain is not None:
        how = "STARTTLS" if options.cert_file else "no TLS: AUTH from loopback only"
        if options.cert_file is None and options.allow_plaintext_auth:
            how = "no TLS: plaintext AUTH allowed"
        lines.append(f"SMTP submission: {local_address(*plain.getsockname()[:2])} ({how})")
    if implicit is not None:
        lines.append(
            f"SMTP submission: {local_address(*implicit.getsockname()[:2])} (implicit TLS)"
        )
    return lines


def run_server(
    settings: Settings,
    insecure: bool,
    listener: socket.socket,
    on_started: Callable[[], None],
    submission_sockets: Sequence[socket.socket | None] = (),
) -> None:
    services = []
    if any(submission_sockets):

        def smtp_submission(proxy: MailProxy) -> contextlib.AbstractAsyncContextManager[object]:
            return submission_listening(proxy, settings, *submission_sockets)

        services.append(smtp_submission)
    http_app = create_app(build_proxy(settings), settings, insecure=insecure, services=services)
    server = GracefulServer(
        uvicorn.Config(
            http_app,
            log_level=settings.logging.level,
            access_log=False,
            # uvicorn's records go through the service's renderer (entrypoints.logs).
            log_config=None,
            # Who the client is decides the authentication throttle: a forwarded address
            # is believed only from the proxies the operator names (uvicorn would believe
            # any local process).
            proxy_headers=settings.server.forwarded_allow_ips is not None,
            forwarded_allow_ips=settings.server.forwarded_allow_ips or "",
            # uvloop and httptools when installed (dependencies where uvloop exists):
            # about a sixth less CPU per delivered message than asyncio's own loop.
            loop="auto",
            http="auto",
            timeout_graceful_shutdown=int(settings.delivery.command_timeout_s),
        ),
        on_started,
    )
    server.run(sockets=[listener])
    if server.failure is not None:
        raise server.failure


class GracefulServer(uvicorn.Server):
    """uvicorn's server, which calls ``on_started`` once it answers (a failure there
    stops it gracefully and is kept in ``failure``), and exits with status 0 after a
    SIGTERM that ended in a graceful stop (uvicorn re-raises the signal after shutting
    down, so the process would end as killed by it, which supervisors report as a
    failure)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started
        self.failure: CommandFailed | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        try:
            self.on_started()
        except CommandFailed as exc:
            self.failure = exc
            self.should_exit = True

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
            captured.remove(sig)
