"""The commands of one instance, ``mail-proxy NAME ...``: ``info``, ``token``,
``rotate-key`` and ``tenants ...``. Each receives the instance as ``instance``."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any, Literal

import msgspec
from cyclopts import Parameter

from mailproxy.adapters.sealed import ResealCount
from mailproxy.bootstrap import reseal_secrets
from mailproxy.config import load_settings
from mailproxy.domain.egress import check_http_url
from mailproxy.domain.validation import is_tenant_id
from mailproxy.entrypoints.admin import ApiError
from mailproxy.entrypoints.cli.apps import JsonFlag, TargetInstance, instance_app, tenants_app
from mailproxy.entrypoints.cli.exits import CommandFailed, UsageError
from mailproxy.entrypoints.cli.output import (
    Column,
    counts,
    fields,
    present,
    progress,
    request,
    show,
    suspended,
    table,
)
from mailproxy.entrypoints.cli.prompts import ask, ask_as, interactive, required, yes_no
from mailproxy.entrypoints.cli.send_windows import (
    FromPriorityOption,
    SendWindowOption,
    ZoneOption,
    send_windows_body,
)
from mailproxy.entrypoints.instances import Instance


@instance_app.command
def info(*, instance: TargetInstance, json_output: JsonFlag = False) -> None:
    """Where the instance lives, whether it runs, where it accepts SMTP submission, and
    its queue by status.

    Example: ``mail-proxy myserver info``
    """
    status = request(instance, "GET", "/status")
    data = msgspec.to_builtins(instance.info()) | {"queue": status["queue"]}
    show(data, json_output, lambda d: [
        f"{d['name']}  {d['url']}  "
        + (f"running pid {d['pid']}" if d["running"] else "stopped"),
        f"folder: {d['path']}",
        "SMTP submission: " + (", ".join(d["submission"]) or "off ([submission] port)"),
        f"queue: {counts(d['queue'])}",
    ])  # fmt: skip


@instance_app.command
def token(*, instance: TargetInstance, rotate: bool = False) -> None:
    """Print the admin token in use; --rotate prints a new one, which a running instance
    takes at its next start (until then it and this command line keep the current one).

    Example: ``mail-proxy myserver token --rotate``

    Parameters
    ----------
    rotate
        Generate a new token.
    """
    if rotate:
        print(instance.rotate_token())
    else:
        print(instance.token)
    if instance.next_token is not None:
        print(
            f"{instance.name} runs with the earlier token until it restarts: "
            f"mail-proxy restart {instance.name} applies the new one",
            file=sys.stderr,
        )


@instance_app.command(name="rotate-key")
def rotate_key(*, instance: TargetInstance, json_output: JsonFlag = False) -> None:
    """Re-encrypt every stored secret with the first key of security.encryption_key
    (plaintext ones too). After putting a new key first in the list (the old ones
    after it) and restarting; the instance may keep running meanwhile.

    Example: ``mail-proxy myserver rotate-key``
    """
    settings = load_settings(instance.config_file, instance_name=instance.name)
    with progress("re-encrypting", None, wanted=not json_output) as update:

        def report(count: ResealCount) -> None:
            update(description=f"re-encrypting: {count.tenants} tenants, {count.secrets} secrets")

        count = asyncio.run(reseal_secrets(settings, report))
    show(msgspec.to_builtins(count), json_output, lambda c: [
        f"re-encrypted {c['secrets']} secrets ({c['tenants']} tenants, "
        f"{c['accounts']} accounts) with the first key of security.encryption_key",
    ])  # fmt: skip


@tenants_app.command(name="list")
def tenants_list(*, instance: TargetInstance, json_output: JsonFlag = False) -> None:
    """List tenants.

    Example: ``mail-proxy myserver tenants list --json``
    """
    found = request(instance, "GET", "/tenants")["tenants"]
    columns: list[Column] = [
        ("id", lambda t: t["id"]),
        ("name", lambda t: t["name"]),
        ("reports to", lambda t: t["client_base_url"]),
        ("suspended", lambda t: suspended(t["suspended_batches"])),
    ]
    table(found, json_output, columns, "no tenants")


@tenants_app.command(name="add")
def tenants_add(
    tenant_id: str | None = None,
    *,
    instance: TargetInstance,
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
) -> None:
    """Create a tenant; prints its API key and webhook secret, shown only this once.

    On a terminal, without TENANT-ID it asks for the id, name, report URL and how
    reports authenticate (not for what is given as options); with it, only for a missing
    --auth-token or --auth-password (without echo), which are errors elsewhere.

    Example: ``mail-proxy myserver tenants add acme --name "Acme Corp"
    --base-url https://app.example.com --auth-method bearer --auth-token T``

    Parameters
    ----------
    tenant_id
        The tenant id (A-Z a-z 0-9 _ . -; asked for on a terminal).
    name
        Display name (default: the id).
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
    body = present(name=name, client_base_url=base_url, client_sync_path=sync_path)
    auth = present(method=auth_method, token=auth_token, user=auth_user, password=auth_password)
    if tenant_id is None and interactive():
        body, auth = ask_tenant(body, auth, functools.partial(new_tenant_id, instance))
    else:
        usage = f"mail-proxy {instance.name} tenants add TENANT-ID"
        body["id"] = required(tenant_id, f"TENANT-ID: {usage}")
    if auth:
        body["client_auth"] = complete_auth(auth)
    rates = present(per_minute=rate_per_minute, per_hour=rate_per_hour, per_day=rate_per_day)
    if rates:
        body["rate_limits"] = rates
    created = request(instance, "POST", "/tenant", json=body)
    warn(created)
    show(created, json_output, lambda d: [
        f"tenant {d['tenant']['id']} created",
        f"api key:        {d['api_key']}",
        f"webhook secret: {d['webhook_secret']}",
        "Keep both now: they are shown only this once. The key authenticates the "
        "tenant's calls; the secret signs its delivery reports.",
    ])  # fmt: skip


def warn(answer: dict[str, Any]) -> None:
    """The answer's warnings (the tenant was saved, yet something will not work: e.g. a
    report URL the egress rule refuses), on stderr so that --json output stays clean."""
    for warning in answer.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)


def ask_tenant(
    given: dict[str, Any], auth: dict[str, Any], new_id: Callable[[str], str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A tenant's id (checked by ``new_id`` as soon as it is typed), name, report URL
    and report authentication, asked for one by one except those given; the tenant and
    its ``client_auth``."""
    tenant = {"id": ask_as(new_id, "Tenant id")} | given
    if "name" not in tenant:
        tenant["name"] = ask("Name", default=tenant["id"])
    if "client_base_url" not in tenant:
        url = ask_as(report_url, "Application URL for delivery reports", blank="no reports")
        tenant |= present(client_base_url=url)
    if tenant.get("client_base_url") and "client_sync_path" not in tenant:
        tenant["client_sync_path"] = ask_as(
            path, "Report path under it", default="/mail-proxy/sync"
        )
    if tenant.get("client_base_url") and "method" not in auth:
        auth["method"] = ask("Reports authenticate with", default="none", choices=AUTH_METHODS)
    return tenant, auth


AUTH_METHODS = ("none", "bearer", "basic")


def complete_auth(auth: dict[str, Any]) -> dict[str, Any]:
    """The report authentication with its credentials: those missing are asked for on a
    terminal (secrets without echo), usage errors elsewhere."""
    method = auth.setdefault("method", "none")
    needed = {"bearer": [("token", True)], "basic": [("user", False), ("password", True)]}
    for field, secret in needed.get(method, []):
        if field not in auth:
            question = f"{'Bearer' if method == 'bearer' else 'Basic-auth'} {field}"
            auth[field] = (
                ask(question, hidden=secret) if interactive()
                else required(None, f"--auth-{field} for --auth-method {method}")
            )  # fmt: skip
    return auth


def new_tenant_id(instance: Instance, answer: str) -> str:
    """A tenant id answer that is valid and not yet a tenant of ``instance``."""
    if not is_tenant_id(answer):
        raise ValueError("1 to 64 of A-Z a-z 0-9 _ . - (not . or ..)")
    try:
        request(instance, "GET", f"/tenant/{answer}")
    except ApiError as error:
        if error.status == HTTPStatus.NOT_FOUND:
            return answer
        raise
    raise ValueError(f"tenant {answer} already exists")


def path(answer: str) -> str:
    if not answer.startswith("/"):
        raise ValueError("a path starting with /")
    return answer


def report_url(answer: str) -> str | None:
    return check_http_url("client_base_url", answer) if answer else None


@tenants_app.command(name="show")
def tenants_show(
    tenant_id: str, *, instance: TargetInstance, json_output: JsonFlag = False
) -> None:
    """Show one tenant (never its secrets).

    Example: ``mail-proxy myserver tenants show acme``

    Parameters
    ----------
    tenant_id
        The tenant id.
    """
    answer = request(instance, "GET", f"/tenant/{tenant_id}")
    warn(answer)
    found = answer["tenant"]
    readable = {"suspended_batches": suspended(found["suspended_batches"])}
    if found.get("client_auth"):
        readable["client_auth"] = found["client_auth"]["method"]
    show(found, json_output, lambda t: fields(t | readable))


@tenants_app.command(name="update")
def tenants_update(
    tenant_id: str,
    *,
    instance: TargetInstance,
    name: str | None = None,
    base_url: str | None = None,
    sync_path: str | None = None,
    send_window: SendWindowOption = None,
    tz: ZoneOption = None,
    windows_from: FromPriorityOption = None,
    clear_send_windows: Annotated[bool, Parameter(negative=())] = False,
    json_output: JsonFlag = False,
) -> None:
    """Change some fields of a tenant; the others stay.

    Example: ``mail-proxy myserver tenants update acme --name "Acme Inc"``

    Send windows: ``mail-proxy myserver tenants update acme --send-window "mon-fri
    08:00-20:00" --tz Europe/Rome`` (medium and low messages wait for them).

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
    send_window
        When messages may go, as DAYS HH:MM-HH:MM (e.g. "mon-fri 08:00-20:00",
        "sat,sun 10:00-13:00"); give it again for more windows. Replaces the windows.
    tz
        The IANA time zone of the windows (e.g. Europe/Rome).
    windows_from
        The highest priority the windows hold back (default medium: medium and low wait,
        immediate and high always go).
    clear_send_windows
        Remove the tenant's send windows.
    """
    body = present(name=name, client_base_url=base_url, client_sync_path=sync_path)
    windows = send_windows_body(send_window, tz, windows_from, clear_send_windows)
    if windows is not msgspec.UNSET:
        body["send_windows"] = windows
    if not body:
        raise UsageError(
            "nothing to change: give --name, --base-url, --sync-path, --send-window or "
            "--clear-send-windows"
        )
    answer = request(instance, "PUT", f"/tenant/{tenant_id}", json=body)
    warn(answer)
    changed = answer["tenant"]
    show(changed, json_output, lambda t: [f"tenant {t['id']} updated"])


@tenants_app.command(name="rotate-secret")
def tenants_rotate_secret(
    tenant_id: str, *, instance: TargetInstance, json_output: JsonFlag = False
) -> None:
    """Give a tenant a new webhook secret (shown only now); the old one keeps signing
    report calls beside it until ``tenants retire-secret``.

    Example: ``mail-proxy myserver tenants rotate-secret acme``

    Parameters
    ----------
    tenant_id
        The tenant id.
    """
    answer = request(instance, "POST", f"/tenant/{tenant_id}/webhook-secret")
    show(answer, json_output, lambda d: [
        f"webhook secret: {d['webhook_secret']}",
        "the previous secret still signs until: "
        f"mail-proxy {instance.name} tenants retire-secret {tenant_id}",
    ])  # fmt: skip


@tenants_app.command(name="retire-secret")
def tenants_retire_secret(tenant_id: str, *, instance: TargetInstance) -> None:
    """Stop signing a tenant's report calls with its previous webhook secret.

    Example: ``mail-proxy myserver tenants retire-secret acme``

    Parameters
    ----------
    tenant_id
        The tenant id.
    """
    found = request(instance, "GET", f"/tenant/{tenant_id}")["tenant"]
    if not found["has_webhook_secret_previous"]:
        print(f"tenant {tenant_id}: no previous webhook secret to retire (only the current "
              "one signs)")  # fmt: skip
        return
    request(instance, "DELETE", f"/tenant/{tenant_id}/webhook-secret/previous")
    print(f"tenant {tenant_id}: previous webhook secret retired; only the current one signs")


@tenants_app.command(name="delete")
def tenants_delete(
    tenant_id: str,
    *,
    instance: TargetInstance,
    yes: Annotated[bool, Parameter(negative=())] = False,
) -> None:
    """Delete a tenant with its accounts and messages, after asking on a terminal.

    Without a terminal, --yes is required: nothing can be undone.

    Example: ``mail-proxy myserver tenants delete acme --yes``

    Parameters
    ----------
    tenant_id
        The tenant id.
    yes
        Delete without asking.
    """
    if not yes:
        accounts = request(instance, "GET", "/accounts", params={"tenant_id": tenant_id})
        count = len(accounts["accounts"])
        what = f"tenant {tenant_id} with its {count} accounts and all its messages"
        if not interactive():
            raise UsageError(f"deleting {what} cannot be undone: give --yes to confirm")
        if not yes_no(f"Delete {what}", default=False):
            raise CommandFailed(f"tenant {tenant_id} not deleted")
    request(instance, "DELETE", f"/tenant/{tenant_id}")
    print(f"tenant {tenant_id} deleted")


@tenants_app.command(name="sync-status")
def tenants_sync_status(*, instance: TargetInstance, json_output: JsonFlag = False) -> None:
    """Delivery reports per tenant: entries waiting, the last error, and a warning when
    the report URL can never be called (the egress rule refuses it).

    Example: ``mail-proxy myserver tenants sync-status``
    """
    answer = request(instance, "GET", "/tenants/sync-status")
    if json_output:
        show(answer, True, lambda _: [])
        return
    columns: list[Column] = [
        ("tenant", lambda t: t["id"]),
        ("waiting", lambda t: t["pending_reports"]),
        ("last error", lambda t: t["last_error"]),
    ]
    table(answer["tenants"], False, columns, "no tenants")
    for tenant in answer["tenants"]:
        if tenant.get("warning"):
            print(f"warning: {tenant['id']}: {tenant['warning']}")
