"""The commands of one tenant, ``mail-proxy NAME TENANT ...``: ``accounts ...``,
``messages ...``, ``send``, ``run-now``, ``suspend`` and ``activate``. Each receives the
instance as ``instance`` and the tenant id as ``tenant_id``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from cyclopts import Parameter, validators

from mailproxy.domain.model import Status
from mailproxy.domain.validation import check_path_id
from mailproxy.entrypoints.admin import ApiError, call, message_from_eml
from mailproxy.entrypoints.cli.apps import (
    JsonFlag,
    TargetInstance,
    TargetTenant,
    accounts_app,
    messages_app,
    tenant_app,
)
from mailproxy.entrypoints.cli.exits import CommandFailed, UsageError
from mailproxy.entrypoints.cli.output import (
    Column,
    fields,
    local_time,
    present,
    progress,
    request,
    run_api,
    show,
    shown,
    table,
)
from mailproxy.entrypoints.cli.prompts import (
    ask,
    ask_as,
    count,
    interactive,
    required,
    yes_no,
)
from mailproxy.entrypoints.instances import Instance

#: A port number given as an option: a usage error (exit 2) outside 1-65535.
Port = Annotated[int, Parameter(validator=validators.Number(gte=1, lte=65535))]
#: A count given as an option (a limit, connections): a usage error below 1.
Count = Annotated[int, Parameter(validator=validators.Number(gte=1))]
#: The priorities ``send`` accepts: the API's names and numbers.
PriorityName = Literal["immediate", "high", "medium", "low", "0", "1", "2", "3"]

#: Messages per add-messages call when sending files.
SEND_BATCH = 100
#: Messages per GET /messages call when listing them.
PAGE = 500


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
    """
    given = present(
        kind=kind, host=host, port=port, user=user, password=password,
        limit_per_minute=limit_per_minute, limit_per_hour=limit_per_hour,
        limit_per_day=limit_per_day, limit_behavior=limit_behavior,
        max_connections=max_connections, is_default=default or None,
    )  # fmt: skip
    if tls is not None:
        given["use_tls"] = TLS_ANSWERS[tls]  # auto is None: kept, so it is not asked
    refuse_smtp_options_for_capture(given)
    if account_id is None and interactive():
        accounts = request(instance, "GET", "/accounts", params={"tenant_id": tenant_id})
        first = not any(a["is_default"] for a in accounts["accounts"])
        body = ask_account(given, first_default=first)
    else:
        usage = f"mail-proxy {instance.name} {tenant_id} accounts add ACCOUNT-ID --host HOST"
        body = {"id": required(account_id, f"ACCOUNT-ID: {usage}")} | given
        complete_smtp(body)
    body = {"kind": "smtp", "is_default": False} | body
    saved = request(instance, "POST", "/account", params={"tenant_id": tenant_id}, json=body)
    show(saved["account"], json_output, lambda a: [f"account {a['id']} saved"])


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


def ask_account(given: dict[str, Any], first_default: bool) -> dict[str, Any]:
    """The fields of an account, asked for one by one except those ``given``; the
    tenant's first account is its default unless the person says otherwise."""
    account = {"id": ask_as(lambda a: check_path_id("id", a), "Account id")} | given

    def fill(field: str, question: Callable[[], Any]) -> None:
        if field not in account:
            account[field] = question()

    fill("kind", lambda: ask("Kind: smtp sends, capture writes .eml files", default="smtp",
                             choices=("smtp", "capture")))  # fmt: skip
    if account["kind"] == "smtp":
        fill("host", lambda: ask("SMTP host"))
        fill("port", lambda: ask_as(port_number, "SMTP port", default="587"))
        fill("user", lambda: ask("SMTP user", blank="no login") or None)
        if account.get("user"):
            fill("password", lambda: ask("SMTP password", hidden=True))
        fill("use_tls", lambda: TLS_ANSWERS[ask("TLS", default="auto", choices=list(TLS_ANSWERS))])
        for field, window in LIMITS:
            fill(field, functools.partial(ask_as, count, f"Sends per {window}", blank="no limit"))
    fill("is_default", lambda: yes_no("Default account of the tenant", first_default))
    return {k: v for k, v in account.items() if v is not None or k == "use_tls"}


def complete_smtp(account: dict[str, Any]) -> None:
    """What an SMTP account cannot go without: its host, its port (587 when nobody is
    asked) and the password of a user; asked on a terminal, usage errors elsewhere."""
    if account.get("kind", "smtp") != "smtp":
        return
    asking = interactive()
    if "host" not in account:
        account["host"] = ask("SMTP host") if asking else required(None, "--host of the server")
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


@messages_app.command(name="list")
def messages_list(
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    status: Status | None = None,
    limit: Count = 50,
    every: Annotated[bool, Parameter(name="--all", negative=())] = False,
    json_output: JsonFlag = False,
) -> None:
    """List the tenant's messages, oldest first.

    The first --limit, or --all, read a page at a time (with a progress bar on a
    terminal). One line per message: ``pri`` is its priority (0 immediate to 3 low),
    ``tries`` its delivery attempts, ``error`` the short form of the last error
    (``messages show`` gives it whole).

    Example: ``mail-proxy myserver acme messages list --status error --all``

    Parameters
    ----------
    status
        Only the messages in this status.
    limit
        How many messages at most.
    every
        Every message, however many.
    """
    params = {"tenant_id": tenant_id} | present(status=status and status.value)
    wanted = None if every else limit
    with progress("reading messages", wanted, wanted=not json_output) as update:
        found = run_api(instance, lambda client: read_pages(client, params, wanted, update))
    columns: list[Column] = [
        ("id", lambda m: m["id"]),
        ("status", lambda m: m["status"]),
        ("pri", lambda m: m["priority"]),
        ("tries", lambda m: m["attempts"]),
        ("updated", lambda m: local_time(m["updated_at"])),
        ("error", lambda m: m["error"] and short_error(m["error"])),
    ]
    table(found, json_output, columns, "no messages", gives_way="error")


def short_error(error: str) -> str:
    """What went wrong, without the details ``messages show`` gives: the part of a
    delivery error before its first colon (``connection at CONNECT``, ``SMTP 550 at
    RCPT``)."""
    return error.partition(": ")[0]


async def read_pages(
    client: httpx.AsyncClient,
    params: dict[str, Any],
    wanted: int | None,
    update: Callable[..., None],
) -> list[dict[str, Any]]:
    """The messages GET /messages lists with ``params``, ``wanted`` at most (all for
    None), in pages of :data:`PAGE`; ``update`` advanced after each."""
    messages: list[dict[str, Any]] = []
    cursor: dict[str, str] = {}
    while wanted is None or len(messages) < wanted:
        size = PAGE if wanted is None else min(PAGE, wanted - len(messages))
        page = await call(client, "GET", "/messages", params=params | cursor | {"limit": size})
        messages += page["messages"]
        update(advance=len(page["messages"]))
        if not page["next_cursor"]:
            break
        cursor = {"cursor": page["next_cursor"]}
    return messages


@messages_app.command(name="show")
def messages_show(
    message_id: str,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    json_output: JsonFlag = False,
) -> None:
    """Show one message with its history and why it has not gone yet.

    Example: ``mail-proxy myserver acme messages show welcome-1``

    Parameters
    ----------
    message_id
        The message id (a file sent with send: its name without .eml).
    """
    params = {"tenant_id": tenant_id}
    found = request(instance, "GET", f"/messages/{message_id}", params=params)["message"]
    show(found, json_output, message_lines)


def message_lines(message: dict[str, Any]) -> list[str]:
    """A message's fields, why it has not gone yet (while it has not), and its history."""
    record = {k: v for k, v in message.items() if k not in ("history", "why")}
    if why := message.get("why"):
        rest = {k: v for k, v in why.items() if k not in ("reason", "detail")}
        record["why"] = ": ".join(filter(None, (why["reason"], why.get("detail")))) + (
            f" ({shown('', rest)})" if rest else ""
        )
    lines = [*fields(record), "history:"]
    history = message.get("history", [])
    width = max((len(event["event"]) for event in history), default=0)
    for event in history:
        detail = f"  {event['detail']}" if event.get("detail") else ""
        lines.append(f"  {local_time(event['ts'])}  {event['event']:<{width}}{detail}".rstrip())
    return lines


@tenant_app.command
def send(
    *files: Path,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    account: str | None = None,
    priority: PriorityName | None = None,
    json_output: JsonFlag = False,
) -> None:
    """Queue .eml files (or every .eml in a folder); each file's name is its id.

    A file the instance does not queue (already sent, invalid) makes the exit code 1,
    with why.

    Example: ``mail-proxy myserver acme send email.eml``

    Parameters
    ----------
    files
        .eml files, or folders of them.
    account
        The account to send through (default: the tenant's default account).
    priority
        immediate (0), high (1), medium (2, the default) or low (3).
    """
    paths = [p for f in files for p in (sorted(f.glob("*.eml")) if f.is_dir() else [f])]
    if not paths:
        raise UsageError("no .eml files given")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"not a file: {', '.join(missing)}")
    check_sender(instance, tenant_id, account)
    extra = present(account_id=account, priority=priority and priority_of(priority))
    with progress("queueing", len(paths), wanted=not json_output) as update:
        answers = run_api(instance, lambda c: add_files(c, tenant_id, paths, extra, update))
    result = {"queued": sum(a["queued"] for a in answers),
              "rejected": [r for a in answers for r in a["rejected"]]}  # fmt: skip
    show(result, json_output, lambda r: [f"queued {r['queued']}"])
    if result["rejected"]:
        path_of = {path.stem: path for path in paths}
        reasons = [f"{path_of[r['id']]} ({r['reason']})" for r in result["rejected"]]
        raise CommandFailed(f"not queued: {', '.join(reasons)}")


def check_sender(instance: Instance, tenant_id: str, account_id: str | None) -> None:
    """Raise unless the messages have an account to go through: ``account_id``, or the
    tenant's default account; the error says, in options, how to give one."""
    accounts = request(instance, "GET", "/accounts", params={"tenant_id": tenant_id})["accounts"]
    add = f"mail-proxy {instance.name} {tenant_id} accounts add ACCOUNT-ID"
    if not accounts:
        raise CommandFailed(
            f"tenant {tenant_id} has no accounts: add one first ({add} --host HOST, "
            "or --kind capture for a sandbox)"
        )
    ids = [a["id"] for a in accounts]
    if account_id is not None and account_id not in ids:
        raise account_not_found(account_id)
    if account_id is None and not any(a["is_default"] for a in accounts):
        raise CommandFailed(
            f"tenant {tenant_id} has no default account: give --account (one of: "
            f"{', '.join(ids)}), or make one the default ({add} ... --default)"
        )


def priority_of(name: str) -> int | str:
    """A ``--priority`` as the API takes it: a number 0-3 or a name."""
    return int(name) if name.isdigit() else name


async def add_files(
    client: httpx.AsyncClient,
    tenant_id: str,
    paths: list[Path],
    extra: dict[str, Any],
    update: Callable[..., None],
) -> list[dict[str, Any]]:
    """The .eml files at ``paths`` (with the fields of ``extra``) read and queued in
    add-messages calls of :data:`SEND_BATCH`, ``update`` advanced after each; the
    answers."""
    answers = []
    for start in range(0, len(paths), SEND_BATCH):
        chunk = [message_from_eml(p, p.stem) | extra for p in paths[start : start + SEND_BATCH]]
        try:
            answers.append(
                await call(
                    client, "POST", "/commands/add-messages",
                    params={"tenant_id": tenant_id}, json={"messages": chunk},
                )
            )  # fmt: skip
        except ApiError as error:
            if "rejected" not in error.answer:
                raise
            answers.append(error.answer)  # nothing queued: the reasons are per file
        update(advance=len(chunk))
    return answers


@tenant_app.command(name="run-now")
def run_now(*, instance: TargetInstance, tenant_id: TargetTenant) -> None:
    """Wake the dispatcher and call the tenant's application at once.

    Example: ``mail-proxy myserver acme run-now``
    """
    request(instance, "POST", "/commands/run-now", params={"tenant_id": tenant_id})
    print("ok")


#: The optional batch code of ``suspend`` and ``activate``.
Batch = Annotated[
    str | None, Parameter(help="One batch (a message's batch_code); default: every message.")
]


def suspension(
    command: str,
    batch: Batch = None,
    /,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    json_output: JsonFlag = False,
) -> None:
    """POST /commands/``command`` (suspend or activate) for the tenant or one batch;
    print what is suspended after it."""
    params = {"tenant_id": tenant_id} | present(batch_code=batch)
    answer = request(instance, "POST", f"/commands/{command}", params=params)
    batches = answer["suspended_batches"]
    state = (
        "every message suspended" if "*" in batches
        else f"batches suspended: {', '.join(batches)}" if batches
        else "sending, nothing suspended"
    )  # fmt: skip
    show(answer, json_output, lambda a: [f"{tenant_id}: {state}; {a['pending_messages']} pending"])


#: ``suspend`` and ``activate``, and their help.
SUSPENSIONS = {
    "suspend": "Stop sending the tenant's messages, or one batch's (they stay queued).\n\n"
    "Example: ``mail-proxy myserver acme suspend newsletter-12``",
    "activate": "Resume the tenant, or one batch; sending starts at once.\n\n"
    "Example: ``mail-proxy myserver acme activate newsletter-12``",
}
for command_name, summary in SUSPENSIONS.items():
    tenant_app.command(functools.partial(suspension, command_name), name=command_name, help=summary)
