"""The ``mail-proxy`` command line.

Exit codes: 0 ok, 1 error, 2 usage. Errors of mailproxy are mapped here, in one place.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import ipaddress
import json
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

import cyclopts
import httpx
import msgspec
import rich.box
import rich.console
import rich.progress
import rich.table
import uvicorn

from mailproxy import __version__
from mailproxy.adapters.sealed import ResealCount
from mailproxy.bootstrap import build_proxy, check_storage, reseal_secrets
from mailproxy.config import Settings, load_settings
from mailproxy.domain.errors import MailProxyError
from mailproxy.domain.model import Status, SubmitResult
from mailproxy.entrypoints.admin import call, connect, message_from_eml
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.instances import Instance, home, instances
from mailproxy.entrypoints.logs import configure_logging

app = cyclopts.App(
    name="mail-proxy",
    help="Durable, rate-limited email delivery for applications.",
    version=__version__,
)

DEMO_TENANT = "demo"
DEMO_ACCOUNT = "sandbox"


def demo_messages(count: int) -> list[dict[str, Any]]:
    """A varied batch: plain, html, alternative, non-ASCII, an attachment, priorities."""
    messages: list[dict[str, Any]] = []
    for n in range(1, count + 1):
        message: dict[str, Any] = {
            "id": f"demo-{n:04d}",
            "from": "Demo Sender <sender@example.com>",
            "to": [f"recipient{n}@example.com"],
            "subject": f"Demo message {n}",
            "body": f"Hello from mailproxy, message {n}.",
            "priority": n % 4,
        }
        if n % 4 == 1:
            message["body_html"] = f"<p>Hello from <b>mailproxy</b>, message {n}.</p>"
        if n % 4 == 2:
            message["subject"] = f"Grüße, 你好 — message {n}"
        if n % 4 == 3:
            message["attachments"] = [
                {
                    "filename": "hello.txt",
                    "storage_path": "base64:" + base64.b64encode(b"attached text\n").decode(),
                }
            ]
        messages.append(message)
    return messages


async def run_demo(directory: Path, count: int) -> dict[str, Any]:
    """Queue ``count`` messages in a SQLite file under ``directory`` and deliver them
    through a capture account; return a summary."""
    settings = load_settings(
        environ={"GMP_DB_PATH": str(directory / "mail_service.db")}, instance_name="demo"
    )
    async with build_proxy(settings, run_dispatcher=False) as proxy:
        await proxy.put_tenant({"id": DEMO_TENANT, "name": "Demo tenant"})
        await proxy.put_account(
            {"id": DEMO_ACCOUNT, "tenant_id": DEMO_TENANT, "kind": "capture", "is_default": True}
        )
        result = await proxy.submit(demo_messages(count), tenant_id=DEMO_TENANT)
        attempted = await proxy.run_until_idle()
        counts = await proxy.counts(DEMO_TENANT)
    return await asyncio.to_thread(summarize_demo, settings, result, attempted, counts)


def summarize_demo(
    settings: Settings, result: SubmitResult, attempted: int, counts: dict[Status, int]
) -> dict[str, Any]:
    outbox = settings.capture_dir / DEMO_TENANT / DEMO_ACCOUNT
    return {
        "database": str(Path(settings.db_path).resolve()),
        "outbox": str(outbox.resolve()),
        "queued": result.queued,
        "rejected": [{"id": r.id, "reason": r.reason} for r in result.rejected],
        "attempted": attempted,
        "statuses": {str(status): n for status, n in sorted(counts.items())},
        "files": sorted(str(p.resolve()) for p in outbox.glob("*.eml")),
    }


@app.command
def demo(
    directory: Annotated[Path, cyclopts.Parameter(name=["--dir"])] = Path("mailproxy-demo"),
    count: int = 12,
    *,
    json_output: Annotated[bool, cyclopts.Parameter(name=["--json"])] = False,
) -> int:
    """Queue messages and deliver them to .eml files through a capture account.

    Parameters
    ----------
    directory
        Folder for the demo database and its outbox (created if missing).
    count
        How many messages to queue.
    json_output
        Print the summary as JSON.
    """
    if not 1 <= count <= 1000:
        print("error: --count must be between 1 and 1000", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(run_demo(directory, count))
    except MailProxyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if json_output:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"queued {summary['queued']} messages in {summary['database']}")
    print(f"delivered: {summary['statuses']}")
    print(f"{len(summary['files'])} .eml files in {summary['outbox']}:")
    for path in summary["files"][:5]:
        print(f"  {path}")
    if len(summary["files"]) > 5:
        print(f"  ... and {len(summary['files']) - 5} more")
    return 0


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
def serve(
    *,
    config: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    insecure: bool = False,
) -> int:
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
    try:
        settings = load_settings(config)
    except MailProxyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bind_host = host or settings.server.host
    bind_port = port or settings.server.port
    if insecure:
        if not is_loopback(bind_host):
            print(f"error: --insecure only on a loopback address, not {bind_host}", file=sys.stderr)
            return 2
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
    configure_logging(settings.logging.level, settings.logging.format)
    try:
        asyncio.run(check_storage(settings))
        http_app = create_app(build_proxy(settings), settings, insecure=insecure)
    except MailProxyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    server = GracefulServer(
        uvicorn.Config(
            http_app,
            host=bind_host,
            port=bind_port,
            log_level=settings.logging.level,
            access_log=False,
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
    return 0


class GracefulServer(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM that ended in a graceful stop exits with
    status 0 (uvicorn re-raises the signal after shutting down, so the process would end
    as killed by it, which supervisors report as a failure)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        captured = getattr(self, "_captured_signals", None)
        if sig == signal.SIGTERM and isinstance(captured, list) and sig in captured:
            captured.remove(sig)


def _instance(name: str) -> Instance:
    return Instance(home(), name)


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


@app.command(name="list")
def list_instances(
    *, json_output: Annotated[bool, cyclopts.Parameter(name=["--json"])] = False
) -> int:
    """Show the instances under GMP_HOME (default ~/.mail-proxy): running or stopped, URL, pid.

    Parameters
    ----------
    json_output
        Print JSON.
    """
    rows = [i.info() for i in instances(home())]
    if json_output:
        print(json.dumps(msgspec.to_builtins(rows), indent=2))
        return 0
    if not rows:
        print(f"no instances in {home()} (create one with: mail-proxy start NAME)")
        return 0
    width = max(len(r.name) for r in rows)
    for row in rows:
        state = f"running  pid {row.pid}" if row.running else "stopped"
        print(f"{row.name:<{width}}  {row.url:<24}  {state}")
    return 0


@app.command
def start(
    name: str,
    *,
    host: str | None = None,
    port: int | None = None,
    foreground: bool = False,
) -> int:
    """Start instance NAME (created on first start, with a generated admin token) and
    return once it answers; --foreground runs it in this terminal instead.

    Example: ``mail-proxy start myserver --port 8025``

    Parameters
    ----------
    name
        Instance name (A-Z a-z 0-9 _ . -).
    host
        Address to bind (kept in the instance's config.ini).
    port
        Port to bind (kept in config.ini; default: the first free from 8000).
    foreground
        Do not go to the background.
    """
    try:
        instance = _instance(name)
        created = not instance.exists()
        if created:
            instance.create(host, port)
        else:
            instance.update_server(host, port)
        pid = instance.pid()
        if pid is not None:
            print(f"{name} is already running at {instance.url} (pid {pid})")
            return 0
        if foreground:
            return serve(config=instance.config_file)
        pid = instance.start()
    except MailProxyError as exc:
        return _fail(str(exc))
    print(f"{name} running at {instance.url} (pid {pid})")
    if created:
        print(f"admin token: {instance.token}  (kept in {instance.config_file})")
    return 0


@app.command
def stop(name: str) -> int:
    """Stop instance NAME gracefully: it stops claiming, finishes in-flight sends, exits.

    Parameters
    ----------
    name
        Instance name.
    """
    try:
        instance = _instance(name)
        if not instance.exists():
            return _fail(f"no instance {name} in {home()}")
        stopped = instance.stop()
    except MailProxyError as exc:
        return _fail(str(exc))
    print(f"{name} stopped" if stopped else f"{name} was not running")
    return 0


@app.command
def restart(name: str) -> int:
    """Stop instance NAME if it runs, then start it.

    Parameters
    ----------
    name
        Instance name.
    """
    result = stop(name)
    return result if result else start(name)


#: Messages per add-messages call when sending files.
SEND_BATCH = 100

JsonFlag = Annotated[bool, cyclopts.Parameter(name=["--json"], help="Print JSON.")]


def _run_api(instance: Instance, steps: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        async with connect(instance) as client:
            return await steps(client)

    return asyncio.run(go())


def _show(data: Any, json_output: bool, lines: Callable[[Any], list[str]]) -> int:
    if json_output:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for line in lines(data):
            print(line)
    return 0


def _table(
    rows: list[dict[str, Any]],
    json_output: bool,
    columns: list[tuple[str, Callable[[dict[str, Any]], object]]],
    empty: str,
) -> int:
    """Rows as a table for people (or JSON for scripts); ``empty`` when there are none."""
    if json_output:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print(empty)
        return 0
    table = rich.table.Table(box=rich.box.SIMPLE_HEAD, pad_edge=False)
    for header, _ in columns:
        table.add_column(header)
    for row in rows:
        table.add_row(*("" if (v := cell(row)) is None else str(v) for _, cell in columns))
    rich.console.Console(file=sys.stdout, soft_wrap=True).print(table)
    return 0


def instance_app(instance: Instance) -> cyclopts.App:
    """The commands of one instance: ``mail-proxy NAME ...``."""
    sub = cyclopts.App(name=f"mail-proxy {instance.name}", help=f"Administer {instance.name}.")
    tenants = cyclopts.App(name="tenants", help="The instance's tenants.")
    sub.command(tenants)

    @sub.command
    def info(*, json_output: JsonFlag = False) -> int:
        """Where the instance lives, whether it runs, and its queue by status.

        Example: ``mail-proxy myserver info``
        """
        status = _run_api(instance, lambda c: call(c, "GET", "/status"))
        data = msgspec.to_builtins(instance.info()) | {"queue": status["queue"]}
        return _show(data, json_output, lambda d: [
            f"{d['name']}  {d['url']}  "
            + (f"running pid {d['pid']}" if d["running"] else "stopped"),
            f"folder: {d['path']}",
            "queue: " + ", ".join(f"{k} {v}" for k, v in d["queue"].items() if v) or "empty",
        ])  # fmt: skip

    @sub.command
    def token(*, rotate: bool = False) -> int:
        """Print the admin token; --rotate replaces it (a running instance takes the new one
        at its next restart).

        Parameters
        ----------
        rotate
            Generate a new token.
        """
        if rotate:
            instance.rotate_token()
            if instance.pid() is not None:
                print(f"restart to apply: mail-proxy restart {instance.name}", file=sys.stderr)
        print(instance.token)
        return 0

    @sub.command(name="rotate-key")
    def rotate_key(*, json_output: JsonFlag = False) -> int:
        """Re-encrypt every stored secret with the first key of security.encryption_key
        (plaintext ones too). After putting a new key first in the list (the old ones
        after it) and restarting; the instance may keep running meanwhile.

        Example: ``mail-proxy myserver rotate-key``
        """
        settings = load_settings(instance.config_file, instance_name=instance.name)
        console = rich.console.Console(file=sys.stderr)
        with rich.progress.Progress(
            rich.progress.SpinnerColumn(),
            rich.progress.TextColumn("{task.description}"),
            console=console,
            transient=True,
            disable=not sys.stderr.isatty(),
        ) as progress:
            task = progress.add_task("re-encrypting", total=None)

            def show(count: ResealCount) -> None:
                progress.update(
                    task, description=f"re-encrypting: {count.tenants} tenants, "
                    f"{count.secrets} secrets",
                )  # fmt: skip

            count = asyncio.run(reseal_secrets(settings, show))
        return _show(msgspec.to_builtins(count), json_output, lambda c: [
            f"re-encrypted {c['secrets']} secrets ({c['tenants']} tenants, "
            f"{c['accounts']} accounts) with the first key of security.encryption_key",
        ])  # fmt: skip

    @tenants.command(name="list")
    def tenants_list(*, json_output: JsonFlag = False) -> int:
        """List tenants.

        Example: ``mail-proxy myserver tenants list --json``
        """
        found = _run_api(instance, lambda c: call(c, "GET", "/tenants"))["tenants"]
        columns: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
            ("id", lambda t: t["id"]),
            ("name", lambda t: t["name"]),
            ("reports to", lambda t: t["client_base_url"]),
            ("suspended", lambda t: ", ".join(t["suspended_batches"])),
        ]
        return _table(found, json_output, columns, "no tenants")

    @tenants.command(name="add")
    def tenants_add(
        tenant_id: str,
        *,
        name: str | None = None,
        base_url: str | None = None,
        sync_path: str | None = None,
        auth_method: Literal["none", "bearer", "basic"] | None = None,
        auth_token: str | None = None,
        auth_user: str | None = None,
        auth_password: str | None = None,
        rate_per_minute: int | None = None,
        rate_per_hour: int | None = None,
        rate_per_day: int | None = None,
        json_output: JsonFlag = False,
    ) -> int:
        """Create a tenant; prints its API key and webhook secret (shown only now).

        Example: ``mail-proxy myserver tenants add acme --name "Acme Corp"
        --base-url https://app.example.com --auth-method bearer --auth-token T``

        Parameters
        ----------
        tenant_id
            The tenant id (A-Z a-z 0-9 _ . -).
        name
            Display name.
        base_url
            The application's base URL for delivery reports.
        sync_path
            The report path under it (default /mail-proxy/sync).
        auth_method
            How reports authenticate to the application.
        auth_token
            Bearer token for the application.
        auth_user
            Basic-auth user for the application.
        auth_password
            Basic-auth password for the application.
        rate_per_minute
            Sends per minute over all the tenant's accounts.
        rate_per_hour
            Sends per hour over all the tenant's accounts.
        rate_per_day
            Sends per day over all the tenant's accounts.
        """
        body: dict[str, Any] = {"id": tenant_id}
        for key, value in (("name", name), ("client_base_url", base_url),
                           ("client_sync_path", sync_path)):  # fmt: skip
            if value is not None:
                body[key] = value
        if auth_method is not None:
            auth = {"method": auth_method, "token": auth_token, "user": auth_user,
                    "password": auth_password}  # fmt: skip
            body["client_auth"] = {k: v for k, v in auth.items() if v is not None}
        rates = {"per_minute": rate_per_minute, "per_hour": rate_per_hour,
                 "per_day": rate_per_day}  # fmt: skip
        if any(v is not None for v in rates.values()):
            body["rate_limits"] = {k: v for k, v in rates.items() if v is not None}
        created = _run_api(instance, lambda c: call(c, "POST", "/tenant", json=body))
        return _show(created, json_output, lambda d: [
            f"tenant {d['tenant']['id']} created",
            f"api key: {d['api_key']}",
            f"webhook secret: {d['webhook_secret']}",
        ])  # fmt: skip

    @tenants.command(name="show")
    def tenants_show(tenant_id: str, *, json_output: JsonFlag = False) -> int:
        """Show one tenant (never its secrets).

        Example: ``mail-proxy myserver tenants show acme``
        """
        found = _run_api(instance, lambda c: call(c, "GET", f"/tenant/{tenant_id}"))["tenant"]
        return _show(found, json_output, lambda t: [f"{k}: {v}" for k, v in t.items()])

    @tenants.command(name="update")
    def tenants_update(
        tenant_id: str,
        *,
        name: str | None = None,
        base_url: str | None = None,
        sync_path: str | None = None,
        json_output: JsonFlag = False,
    ) -> int:
        """Change some fields of a tenant; the others stay.

        Example: ``mail-proxy myserver tenants update acme --name "Acme Inc"``

        Parameters
        ----------
        tenant_id
            The tenant id.
        name
            Display name.
        base_url
            The application's base URL for delivery reports.
        sync_path
            The report path under it.
        """
        body = {k: v for k, v in (("name", name), ("client_base_url", base_url),
                                  ("client_sync_path", sync_path)) if v is not None}  # fmt: skip
        changed = _run_api(instance, lambda c: call(c, "PUT", f"/tenant/{tenant_id}", json=body))[
            "tenant"
        ]
        return _show(changed, json_output, lambda t: [f"tenant {t['id']} updated"])

    @tenants.command(name="rotate-secret")
    def tenants_rotate_secret(tenant_id: str, *, json_output: JsonFlag = False) -> int:
        """Give a tenant a new webhook secret (shown only now); the old one keeps signing
        report calls beside it until ``tenants retire-secret``.

        Example: ``mail-proxy myserver tenants rotate-secret acme``
        """
        path = f"/tenant/{tenant_id}/webhook-secret"
        answer = _run_api(instance, lambda c: call(c, "POST", path))
        return _show(answer, json_output, lambda d: [
            f"webhook secret: {d['webhook_secret']}",
            "the previous secret still signs until: "
            f"mail-proxy {instance.name} tenants retire-secret {tenant_id}",
        ])  # fmt: skip

    @tenants.command(name="retire-secret")
    def tenants_retire_secret(tenant_id: str) -> int:
        """Stop signing a tenant's report calls with its previous webhook secret.

        Example: ``mail-proxy myserver tenants retire-secret acme``
        """
        path = f"/tenant/{tenant_id}/webhook-secret/previous"
        _run_api(instance, lambda c: call(c, "DELETE", path))
        print(f"tenant {tenant_id}: only the current webhook secret signs")
        return 0

    @tenants.command(name="delete")
    def tenants_delete(tenant_id: str) -> int:
        """Delete a tenant with its accounts and messages.

        Example: ``mail-proxy myserver tenants delete acme``
        """
        _run_api(instance, lambda c: call(c, "DELETE", f"/tenant/{tenant_id}"))
        print(f"tenant {tenant_id} deleted")
        return 0

    return sub


def tenant_app(instance: Instance, tenant_id: str) -> cyclopts.App:
    """The commands of one tenant: ``mail-proxy NAME TENANT ...``."""
    sub = cyclopts.App(name=f"mail-proxy {instance.name} {tenant_id}")
    accounts = cyclopts.App(name="accounts", help="The tenant's SMTP accounts.")
    messages = cyclopts.App(name="messages", help="The tenant's messages.")
    sub.command(accounts)
    sub.command(messages)
    scope = {"tenant_id": tenant_id}

    @accounts.command(name="list")
    def accounts_list(*, json_output: JsonFlag = False) -> int:
        """List the tenant's accounts.

        Example: ``mail-proxy myserver acme accounts list``
        """
        found = _run_api(instance, lambda c: call(c, "GET", "/accounts", params=scope))
        columns: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
            ("id", lambda a: a["id"]),
            ("kind", lambda a: a["kind"]),
            ("server", lambda a: f"{a['host']}:{a['port']}" if a["host"] else None),
            ("default", lambda a: "yes" if a["is_default"] else None),
            ("limits /min /h /day", lambda a: " ".join(
                str(a[k] or "-") for k in ("limit_per_minute", "limit_per_hour", "limit_per_day")
            )),
        ]  # fmt: skip
        return _table(found["accounts"], json_output, columns, "no accounts")

    @accounts.command(name="add")
    def accounts_add(
        account_id: str,
        *,
        kind: Literal["smtp", "capture"] = "smtp",
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        tls: bool | None = None,
        limit_per_minute: int | None = None,
        limit_per_hour: int | None = None,
        limit_per_day: int | None = None,
        limit_behavior: Literal["defer", "reject"] | None = None,
        max_connections: int | None = None,
        default: bool = False,
        json_output: JsonFlag = False,
    ) -> int:
        """Create or replace an account. An SMTP account without --host or --port asks
        for them on a terminal; a --user without --password asks for it without echo.

        Example: ``mail-proxy myserver acme accounts add main --host smtp.example.com
        --port 587 --user app --default``
        """
        if kind == "smtp" and sys.stdin.isatty():
            host = host or input("SMTP host: ").strip()
            port = port or int(input("SMTP port [587]: ").strip() or "587")
        if user and password is None and sys.stdin.isatty():
            password = getpass.getpass("SMTP password: ")
        body: dict[str, Any] = {"id": account_id, "kind": kind, "is_default": default}
        for key, value in (("host", host), ("port", port), ("user", user),
                           ("password", password), ("use_tls", tls),
                           ("limit_per_minute", limit_per_minute),
                           ("limit_per_hour", limit_per_hour),
                           ("limit_per_day", limit_per_day),
                           ("limit_behavior", limit_behavior),
                           ("max_connections", max_connections)):  # fmt: skip
            if value is not None:
                body[key] = value
        saved = _run_api(instance, lambda c: call(c, "POST", "/account", params=scope, json=body))[
            "account"
        ]
        return _show(saved, json_output, lambda a: [f"account {a['id']} saved"])

    @accounts.command(name="show")
    def accounts_show(account_id: str, *, json_output: JsonFlag = False) -> int:
        """Show one account (never its password).

        Example: ``mail-proxy myserver acme accounts show main``
        """
        found = _run_api(instance, lambda c: call(c, "GET", "/accounts", params=scope))
        match = [a for a in found["accounts"] if a["id"] == account_id]
        if not match:
            return _fail(f"account not found: {account_id}")
        return _show(match[0], json_output, lambda a: [f"{k}: {v}" for k, v in a.items()])

    @accounts.command(name="delete")
    def accounts_delete(account_id: str, *, force: bool = False) -> int:
        """Delete an account; --force fails its queued messages ("account deleted").

        Example: ``mail-proxy myserver acme accounts delete old --force``

        Parameters
        ----------
        account_id
            The account id.
        force
            Delete even with queued messages, failing them.
        """
        params = scope | ({"force": "true"} if force else {})
        _run_api(instance, lambda c: call(c, "DELETE", f"/account/{account_id}", params=params))
        print(f"account {account_id} deleted")
        return 0

    @messages.command(name="list")
    def messages_list(
        *, status: str | None = None, limit: int = 50, json_output: JsonFlag = False
    ) -> int:
        """List the tenant's messages, oldest first.

        Example: ``mail-proxy myserver acme messages list --status error``
        """
        params: dict[str, Any] = scope | {"limit": limit}
        if status:
            params["status"] = status
        found = _run_api(instance, lambda c: call(c, "GET", "/messages", params=params))
        columns: list[tuple[str, Callable[[dict[str, Any]], object]]] = [
            ("id", lambda m: m["id"]),
            ("status", lambda m: m["status"]),
            ("priority", lambda m: m["priority"]),
            ("attempts", lambda m: m["attempts"]),
            ("error", lambda m: m["error"]),
        ]
        return _table(found["messages"], json_output, columns, "no messages")

    @messages.command(name="show")
    def messages_show(message_id: str, *, json_output: JsonFlag = False) -> int:
        """Show one message with its history and why it has not gone yet.

        Example: ``mail-proxy myserver acme messages show welcome-1``
        """
        found = _run_api(
            instance, lambda c: call(c, "GET", f"/messages/{message_id}", params=scope)
        )["message"]
        return _show(
            found,
            json_output,
            lambda m: (
                [f"{k}: {v}" for k, v in m.items() if k != "history"]
                + [f"  {h['ts']} {h['event']} {h['detail'] or ''}" for h in m.get("history", [])]
            ),
        )

    @sub.command
    def send(
        *files: Path,
        account: str | None = None,
        priority: int | None = None,
        json_output: JsonFlag = False,
    ) -> int:
        """Queue .eml files (or every .eml in a folder); each file's name is its id.

        Example: ``mail-proxy myserver acme send email.eml``
        """
        paths = [p for f in files for p in (sorted(f.glob("*.eml")) if f.is_dir() else [f])]
        if not paths:
            return _fail("no .eml files given", 2)
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            return _fail(f"not a file: {', '.join(missing)}", 2)
        batch = []
        for path in paths:
            message = message_from_eml(path, path.stem)
            if account:
                message["account_id"] = account
            if priority is not None:
                message["priority"] = priority
            batch.append(message)

        async def add_all(client: httpx.AsyncClient) -> list[dict[str, Any]]:
            answers = []
            with rich.progress.Progress(
                console=rich.console.Console(file=sys.stderr),
                transient=True,
                disable=len(batch) <= SEND_BATCH or not sys.stderr.isatty(),
            ) as progress:
                task = progress.add_task("queueing", total=len(batch))
                for start in range(0, len(batch), SEND_BATCH):
                    chunk = batch[start : start + SEND_BATCH]
                    answers.append(
                        await call(
                            client, "POST", "/commands/add-messages", params=scope,
                            json={"messages": chunk},
                        )
                    )  # fmt: skip
                    progress.advance(task, len(chunk))
            return answers

        answers = _run_api(instance, add_all)
        result = {"queued": sum(a["queued"] for a in answers),
                  "rejected": [r for a in answers for r in a["rejected"]]}  # fmt: skip
        return _show(result, json_output, lambda r: [f"queued {r['queued']}"] + [
            f"rejected {x['id']}: {x['reason']}" for x in r["rejected"]
        ])  # fmt: skip

    helps = {
        "run-now": "Wake the dispatcher and call the tenant's application at once.\n\n"
        "Example: ``mail-proxy myserver acme run-now``",
        "suspend": "Stop sending the tenant's messages, or one batch's (they stay queued)."
        "\n\nExample: ``mail-proxy myserver acme suspend newsletter-12``",
        "activate": "Resume the tenant, or one batch; sending starts at once.\n\n"
        "Example: ``mail-proxy myserver acme activate newsletter-12``",
    }
    for command in ("run-now", "suspend", "activate"):

        def make(path: str, help_text: str) -> Callable[..., int]:
            def command_fn(batch: str | None = None, /) -> int:
                params = scope | ({"batch_code": batch} if batch else {})
                answer = _run_api(instance, lambda c: call(c, "POST", path, params=params))
                rest = {k: v for k, v in answer.items() if k != "ok"}
                print(json.dumps(rest) if rest else "ok")
                return 0

            command_fn.__doc__ = help_text
            return command_fn

        sub.command(make(f"/commands/{command}", helps[command]), name=command)
    return sub


@app.default
def instance_command(
    instance_name: str,
    /,
    *tokens: Annotated[str, cyclopts.Parameter(allow_leading_hyphen=True)],
) -> int:
    """Administer instance NAME: ``NAME info | token | rotate-key | tenants
    list|add|show|update|delete|rotate-secret|retire-secret``, and
    one tenant's ``NAME TENANT accounts list|add | messages list|show | send FILE.eml |
    run-now | suspend [BATCH] | activate [BATCH]``."""
    try:
        instance = _instance(instance_name)
        if not instance.exists():
            return _fail(
                f"no instance {instance_name} in {home()} (mail-proxy start {instance_name})"
            )
        commands = instance_app(instance)
        if tokens and tokens[0] not in ("info", "token", "rotate-key", "tenants", "--help", "-h"):
            commands = tenant_app(instance, tokens[0])
            tokens = tokens[1:]
        result = commands(list(tokens), result_action="return_value")
    except MailProxyError as exc:
        return _fail(str(exc))
    return result if isinstance(result, int) else 0


def main() -> None:
    configure_logging("warning")  # commands print their results; `serve` logs more
    # Output piped into `head` and closed early ends the program quietly, as Unix tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    result = app()
    sys.exit(result if isinstance(result, int) else 0)
