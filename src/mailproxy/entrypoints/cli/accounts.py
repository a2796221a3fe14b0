"""The accounts of one tenant, ``mail-proxy NAME TENANT accounts list | add | show |
delete``. Each command receives the instance as ``instance`` and the tenant id as
``tenant_id``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any, Literal

import msgspec
from cyclopts import Parameter, validators

from mailproxy.config import load_settings
from mailproxy.domain.egress import Network, parse_networks, smtp_host_refusal
from mailproxy.domain.validation import check_path_id
from mailproxy.entrypoints.admin import ApiError
from mailproxy.entrypoints.cli.apps import (
    Count,
    JsonFlag,
    Port,
    TargetInstance,
    TargetTenant,
    accounts_app,
)
from mailproxy.entrypoints.cli.exits import CommandFailed, UsageError
from mailproxy.entrypoints.cli.output import Column, fields, present, request, show, table
from mailproxy.entrypoints.cli.prompts import ask, ask_as, count, interactive, required, yes_no
from mailproxy.entrypoints.cli.send_windows import (
    FromPriorityOption,
    SendWindowOption,
    ZoneOption,
    send_windows_body,
)
from mailproxy.entrypoints.instances import Instance


@accounts_app.command(name="list")
def accounts_list(
    *, instance: TargetInstance, tenant_id: TargetTenant, json_output: JsonFlag = False
) -> None:
    """List the tenant's accounts.

    Example: ``mail-proxy myserver acme accounts list``
    """
    found = request(instance, "GET", "/accounts", params={"tenant_id": tenant_id})
    columns: list[Column] = [
        ("id", lambda a: a["id"]),
        ("kind", lambda a: a["kind"]),
        ("server", server),
        ("default", lambda a: "yes" if a["is_default"] else None),
        ("limits", account_limits),
        ("fallbacks", lambda a: ", ".join(a.get("fallback_accounts") or ()) or None),
    ]
    table(found["accounts"], json_output, columns, "no accounts")


def server(account: dict[str, Any]) -> str | None:
    """``smtp.example.com:587``: where an SMTP account sends; None for a capture one."""
    if account["kind"] != "smtp" or not account["host"]:
        return None
    return f"{account['host']}:{account['port']}" if account["port"] else account["host"]


def account_limits(account: dict[str, Any]) -> str | None:
    """``60/min 1000/h``: the account's send limits that are set."""
    windows = (("limit_per_minute", "min"), ("limit_per_hour", "h"), ("limit_per_day", "day"))
    return " ".join(f"{account[k]}/{unit}" for k, unit in windows if account[k]) or None


@accounts_app.command(name="add")
def accounts_add(
    account_id: str | None = None,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    kind: Literal["smtp", "capture"] | None = None,
    host: str | None = None,
    port: Port | None = None,
    user: str | None = None,
    password: str | None = None,
    tls: Literal["auto", "required", "off"] | None = None,
    limit_per_minute: Count | None = None,
    limit_per_hour: Count | None = None,
    limit_per_day: Count | None = None,
    limit_behavior: Literal["defer", "reject"] | None = None,
    max_connections: Count | None = None,
    default: Annotated[bool, Parameter(negative=())] = False,
    fallback: Annotated[list[str] | None, Parameter(consume_multiple=False)] = None,
    failover_after: Annotated[float | None, Parameter(validator=validators.Number(gte=0))] = None,
    send_window: SendWindowOption = None,
    tz: ZoneOption = None,
    windows_from: FromPriorityOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Create or replace an account of the tenant.

    On a terminal, without ACCOUNT-ID it asks for every field not given as an option;
    with it, only for a missing SMTP host and port and the password of a --user (without
    echo). Elsewhere a missing host or password is an error.

    Example: ``mail-proxy myserver acme accounts add main --host smtp.example.com
    --port 587 --user app --default``

    Parameters
    ----------
    account_id
        The account id (asked for on a terminal).
    kind
        smtp sends through an SMTP server; capture writes .eml files into the
        instance's outbox instead (a sandbox). Default: smtp.
    host
        The SMTP server.
    port
        Its port (default 587; 465 is implicit TLS).
    user
        The SMTP login, with --password.
    password
        The SMTP password (stored encrypted when a key is configured; never shown).
    tls
        required: TLS always (STARTTLS, or implicit on 465); off: never; auto (default):
        TLS when the server offers it, required with a password.
    limit_per_minute
        Sends per minute at most (default: no limit).
    limit_per_hour
        Sends per hour at most.
    limit_per_day
        Sends per day at most.
    limit_behavior
        Over a limit, defer the message (default) or reject it.
    max_connections
        Concurrent SMTP connections per process (default 3).
    default
        The tenant's default account, for messages that name none.
    fallback
        Another account of the tenant that sends this one's messages while it is paused,
        cannot be reached, or its rate limits would hold a message too long; give it
        again for a second fallback (tried in order).
    failover_after
        Seconds a message may wait for this account's rate limits before a fallback
        sends it (default 300).
    send_window
        When its messages may go, as DAYS HH:MM-HH:MM (e.g. "mon-fri 08:00-20:00"),
        replacing the tenant's windows; give it again for more windows.
    tz
        The IANA time zone of the windows (e.g. Europe/Rome).
    windows_from
        The highest priority the windows hold back (default medium).
    """
    given = present(
        kind=kind, host=host, port=port, user=user, password=password,
        limit_per_minute=limit_per_minute, limit_per_hour=limit_per_hour,
        limit_per_day=limit_per_day, limit_behavior=limit_behavior,
        max_connections=max_connections, is_default=default or None,
        fallback_accounts=fallback, failover_after_s=failover_after,
    )  # fmt: skip
    windows = send_windows_body(send_window, tz, windows_from, clear=False)
    if windows is not msgspec.UNSET:
        given["send_windows"] = windows
    if tls is not None:
        given["use_tls"] = TLS_ANSWERS[tls]  # auto is None: kept, so it is not asked
    refuse_smtp_options_for_capture(given)
    body = {"kind": "smtp", "is_default": False} | account_body(
        given, account_id, instance=instance, tenant_id=tenant_id
    )
    saved = request(instance, "POST", "/account", params={"tenant_id": tenant_id}, json=body)
    show(saved["account"], json_output, lambda a: [f"account {a['id']} saved"])


def account_body(
    given: dict[str, Any], account_id: str | None, *, instance: Instance, tenant_id: str
) -> dict[str, Any]:
    """The account to save: the options given, the host checked against the instance's
    egress rule, and what is missing asked for on a terminal (without an id) or required
    (elsewhere)."""
    host_check = smtp_host(egress_rule(instance))
    if "host" in given:
        try:
            host_check(given["host"])
        except ValueError as error:
            raise CommandFailed(f"invalid host: {error}") from None
    if account_id is None and interactive():
        accounts = request(instance, "GET", "/accounts", params={"tenant_id": tenant_id})
        first = not any(a["is_default"] for a in accounts["accounts"])
        ids = {a["id"] for a in accounts["accounts"]}
        return ask_account(given, first_default=first, new_id=new_account_id(ids), host=host_check)
    usage = f"mail-proxy {instance.name} {tenant_id} accounts add ACCOUNT-ID --host HOST"
    body = {"id": required(account_id, f"ACCOUNT-ID: {usage}")} | given
    complete_smtp(body, host_check)
    return body


#: The SMTP options of ``accounts add`` and the account fields they set.
SMTP_OPTIONS = {"--host": "host", "--port": "port", "--user": "user",
                "--password": "password", "--tls": "use_tls"}  # fmt: skip


def refuse_smtp_options_for_capture(given: dict[str, Any]) -> None:
    """A capture account connects nowhere: an SMTP option given with ``--kind capture``
    is a mistake, not something to store and never use."""
    smtp = [option for option, field in SMTP_OPTIONS.items() if field in given]
    if given.get("kind") == "capture" and smtp:
        raise UsageError(
            f"{', '.join(smtp)}: for smtp accounts only "
            "(a capture account writes .eml files and connects to no server)"
        )


#: The TLS answers of ``accounts add`` and the account's ``use_tls`` they stand for.
TLS_ANSWERS = {"auto": None, "required": True, "off": False}
#: An account's ``use_tls`` as people read it.
TLS_MODES = {value: answer for answer, value in TLS_ANSWERS.items()}
LIMITS = (("limit_per_minute", "minute"), ("limit_per_hour", "hour"), ("limit_per_day", "day"))


def egress_rule(instance: Instance) -> tuple[Network, ...]:
    """The networks the instance's egress rule allows beyond public addresses."""
    settings = load_settings(instance.config_file, instance_name=instance.name)
    return parse_networks(settings.security.egress_allow)


def smtp_host(allow: tuple[Network, ...]) -> Callable[[str], str]:
    """A check of an SMTP host answer: refused at once when it is an address the
    instance's egress rule forbids (the instance would refuse the account)."""

    def check(answer: str) -> str:
        if refusal := smtp_host_refusal(answer, allow):
            raise ValueError(refusal)
        return answer

    return check


def new_account_id(existing: set[str]) -> Callable[[str], str]:
    """A check of an account id answer: valid, and not one of the tenant's accounts
    (asked for, an id is a new account; ``accounts add ID`` replaces one)."""

    def check(answer: str) -> str:
        check_path_id("id", answer)
        if answer in existing:
            raise ValueError(f"account {answer} already exists (accounts add {answer} "
                             "with options replaces it)")  # fmt: skip
        return answer

    return check


def ask_account(
    given: dict[str, Any],
    *,
    first_default: bool,
    new_id: Callable[[str], str],
    host: Callable[[str], str],
) -> dict[str, Any]:
    """The fields of an account, asked for one by one except those ``given``; the
    tenant's first account is its default unless the person says otherwise. The id and
    the host are checked as soon as they are typed (``new_id``, ``host``)."""
    account = {"id": ask_as(new_id, "Account id")} | given

    def fill(field: str, question: Callable[[], Any]) -> None:
        if field not in account:
            account[field] = question()

    fill("kind", lambda: ask("Kind: smtp sends, capture writes .eml files", default="smtp",
                             choices=("smtp", "capture")))  # fmt: skip
    if account["kind"] == "smtp":
        fill("host", lambda: ask_as(host, "SMTP host"))
        fill("port", lambda: ask_as(port_number, "SMTP port", default="587"))
        fill("user", lambda: ask("SMTP user", blank="no login") or None)
        if account.get("user"):
            fill("password", lambda: ask("SMTP password", hidden=True))
        fill("use_tls", lambda: TLS_ANSWERS[ask("TLS", default="auto", choices=list(TLS_ANSWERS))])
        for field, window in LIMITS:
            fill(field, functools.partial(ask_as, count, f"Sends per {window}", blank="no limit"))
    fill("is_default", lambda: yes_no("Default account of the tenant", first_default))
    return {k: v for k, v in account.items() if v is not None or k == "use_tls"}


def complete_smtp(account: dict[str, Any], host: Callable[[str], str]) -> None:
    """What an SMTP account cannot go without: its host (checked by ``host``), its port
    (587 when nobody is asked) and the password of a user; asked on a terminal, usage
    errors elsewhere."""
    if account.get("kind", "smtp") != "smtp":
        return
    asking = interactive()
    if "host" not in account:
        account["host"] = (
            ask_as(host, "SMTP host") if asking else required(None, "--host of the server")
        )
    if "port" not in account:
        account["port"] = ask_as(port_number, "SMTP port", default="587") if asking else 587
    if account.get("user") and "password" not in account:
        account["password"] = (
            ask("SMTP password", hidden=True) if asking
            else required(None, "--password for --user")
        )  # fmt: skip


def port_number(answer: str) -> int:
    if not answer.isdigit() or not 0 < int(answer) < 65536:
        raise ValueError("a port number, 1 to 65535")
    return int(answer)


@accounts_app.command(name="show")
def accounts_show(
    account_id: str,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    json_output: JsonFlag = False,
) -> None:
    """Show one account (never its password).

    Example: ``mail-proxy myserver acme accounts show main``

    Parameters
    ----------
    account_id
        The account id.
    """
    found = request(instance, "GET", "/accounts", params={"tenant_id": tenant_id})
    match = [a for a in found["accounts"] if a["id"] == account_id]
    if not match:
        raise account_not_found(account_id)
    show(match[0], json_output, lambda a: fields(a | {"use_tls": TLS_MODES[a["use_tls"]]}))


def account_not_found(account_id: str) -> CommandFailed:
    """The error for an account id the tenant does not have, whichever command."""
    return CommandFailed(f"account not found: {account_id}")


@accounts_app.command(name="delete")
def accounts_delete(
    account_id: str, *, instance: TargetInstance, tenant_id: TargetTenant, force: bool = False
) -> None:
    """Delete an account; --force fails its queued messages ("account deleted").

    Example: ``mail-proxy myserver acme accounts delete old --force``

    Parameters
    ----------
    account_id
        The account id.
    force
        Delete even with queued messages, failing them.
    """
    params = {"tenant_id": tenant_id} | ({"force": "true"} if force else {})
    try:
        request(instance, "DELETE", f"/account/{account_id}", params=params)
    except ApiError as error:
        if error.status == HTTPStatus.NOT_FOUND:
            raise account_not_found(account_id) from None
        raise
    print(f"account {account_id} deleted")
