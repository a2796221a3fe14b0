"""``mail-proxy serve``: the HTTP service in the foreground, with its admin token."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import signal
import sys
from pathlib import Path
from types import FrameType

import msgspec
import uvicorn

from mailproxy.bootstrap import build_proxy, check_storage
from mailproxy.config import Settings, load_settings
from mailproxy.entrypoints.cli.apps import app
from mailproxy.entrypoints.cli.exits import UsageError, exit_code
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.logs import configure_logging


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_token_for(settings: Settings) -> tuple[str, bool]:
    """The configured admin token, else the one generated at an earlier start (kept in
    ``admin_token`` beside the database, mode 600), else a new one written there.
    Returns the token and whether it was just generated."""
    if settings.server.api_token:
        return settings.server.api_token, False
    db_path = settings.db_path
    folder = (
        Path(settings.instance_dir)
        if "://" in db_path or db_path == ":memory:"
        else (Path(db_path).parent)
    )
    token_file = folder / "admin_token"
    if token_file.exists():
        return token_file.read_text(encoding="utf-8").strip(), False
    token = secrets.token_urlsafe(32)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, True


@app.command
@exit_code
def serve(
    *,
    config: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    insecure: bool = False,
) -> None:
    """Run the HTTP service in the foreground until SIGTERM or Ctrl-C, which stop
    claiming and let in-flight sends finish.

    Without a configured admin token (``GMP_API_TOKEN`` or ``[server] api_token``) one is
    generated at the first start, printed once, and kept in ``admin_token`` beside the
    database.

    Parameters
    ----------
    config
        config.ini to read.
    host
        Address to bind (default: server.host, 127.0.0.1).
    port
        Port to bind (default: server.port, 8000).
    insecure
        Serve without any token (every caller is the admin); only on a loopback address.
    """
    settings = load_settings(config)
    bind_host = host or settings.server.host
    bind_port = port or settings.server.port
    if insecure:
        if not is_loopback(bind_host):
            raise UsageError(f"--insecure only on a loopback address, not {bind_host}")
        settings = msgspec.structs.replace(
            settings, server=msgspec.structs.replace(settings.server, api_token=None)
        )
    else:
        token, generated = admin_token_for(settings)
        if generated:
            print(
                f"admin token (shown once, kept in the instance folder): {token}", file=sys.stderr
            )
        settings = msgspec.structs.replace(
            settings, server=msgspec.structs.replace(settings.server, api_token=token)
        )
    configure_logging(settings.logging.level, settings.logging.format, sys.stdout)
    asyncio.run(check_storage(settings))
    http_app = create_app(build_proxy(settings), settings, insecure=insecure)
    server = GracefulServer(
        uvicorn.Config(
            http_app,
            host=bind_host,
            port=bind_port,
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
        )
    )
    server.run()


class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM that ended in a graceful stop exits with
    status 0 (uvicorn re-raises the signal after shutting down, so the process would end
    as killed by it, which supervisors report as a failure)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
            captured.remove(sig)
