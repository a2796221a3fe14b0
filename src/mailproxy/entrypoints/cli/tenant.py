"""The commands of one tenant, ``mail-proxy NAME TENANT ...``: ``accounts ...``,
``messages ...``, ``send``, ``run-now``, ``suspend`` and ``activate``. Each receives the
instance as ``instance`` and the tenant id as ``tenant_id``."""

from __future__ import annotations

import functools
import getpass
import sys
from pathlib import Path
from typing import Any, Literal

import httpx
import rich.console
import rich.progress

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
    request,
    run_api,
    show,
    shown,
    table,
)

#: An account's ``use_tls`` as people read it (see ``accounts add --help``).
TLS_MODES = {None: "auto", True: "required", False: "off"}

#: Messages per add-messages call when sending files.
SEND_BATCH = 100


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
        ("server", lambda a: f"{a['host']}:{a['port']}" if a["host"] else None),
        ("default", lambda a: "yes" if a["is_default"] else None),
        ("limits", account_limits),
    ]
    table(found["accounts"], json_output, columns, "no accounts")


def account_limits(account: dict[str, Any]) -> str | None:
    """``60/min 1000/h``: the account's send limits that are set."""
    windows = (("limit_per_minute", "min"), ("limit_per_hour", "h"), ("limit_per_day", "day"))
    return " ".join(f"{account[k]}/{unit}" for k, unit in windows if account[k]) or None


@accounts_app.command(name="add")
def accounts_add(
    account_id: str,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
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
) -> None:
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
    body |= present(
        host=host, port=port, user=user, password=password, use_tls=tls,
        limit_per_minute=limit_per_minute, limit_per_hour=limit_per_hour,
        limit_per_day=limit_per_day, limit_behavior=limit_behavior,
        max_connections=max_connections,
    )  # fmt: skip
    saved = request(instance, "POST", "/account", params={"tenant_id": tenant_id}, json=body)
    show(saved["account"], json_output, lambda a: [f"account {a['id']} saved"])


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
    """
    found = request(instance, "GET", "/accounts", params={"tenant_id": tenant_id})
    match = [a for a in found["accounts"] if a["id"] == account_id]
    if not match:
        raise CommandFailed(f"account not found: {account_id}")
    show(match[0], json_output, lambda a: fields(a | {"use_tls": TLS_MODES[a["use_tls"]]}))


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
    request(instance, "DELETE", f"/account/{account_id}", params=params)
    print(f"account {account_id} deleted")


@messages_app.command(name="list")
def messages_list(
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    status: str | None = None,
    limit: int = 50,
    json_output: JsonFlag = False,
) -> None:
    """List the tenant's messages, oldest first.

    Example: ``mail-proxy myserver acme messages list --status error``
    """
    params: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
    if status:
        params["status"] = status
    found = request(instance, "GET", "/messages", params=params)
    columns: list[Column] = [
        ("id", lambda m: m["id"]),
        ("status", lambda m: m["status"]),
        ("priority", lambda m: m["priority"]),
        ("attempts", lambda m: m["attempts"]),
        ("updated", lambda m: local_time(m["updated_at"])),
        ("error", lambda m: m["error"]),
    ]
    table(found["messages"], json_output, columns, "no messages")


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
    for event in message.get("history", []):
        detail = f"  {event['detail']}" if event.get("detail") else ""
        lines.append(f"  {local_time(event['ts'])}  {event['event']}{detail}")
    return lines


@tenant_app.command
def send(
    *files: Path,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    account: str | None = None,
    priority: int | None = None,
    json_output: JsonFlag = False,
) -> None:
    """Queue .eml files (or every .eml in a folder); each file's name is its id. A file
    the instance does not queue (already sent, invalid) makes the exit code 1, with why.

    Example: ``mail-proxy myserver acme send email.eml``
    """
    paths = [p for f in files for p in (sorted(f.glob("*.eml")) if f.is_dir() else [f])]
    if not paths:
        raise UsageError("no .eml files given")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"not a file: {', '.join(missing)}")
    batch = []
    for path in paths:
        message = message_from_eml(path, path.stem)
        if account:
            message["account_id"] = account
        if priority is not None:
            message["priority"] = priority
        batch.append(message)
    answers = run_api(instance, lambda client: add_in_chunks(client, tenant_id, batch))
    result = {"queued": sum(a["queued"] for a in answers),
              "rejected": [r for a in answers for r in a["rejected"]]}  # fmt: skip
    show(result, json_output, lambda r: [f"queued {r['queued']}"])
    if result["rejected"]:
        path_of = {path.stem: path for path in paths}
        reasons = [f"{path_of[r['id']]} ({r['reason']})" for r in result["rejected"]]
        raise CommandFailed(f"not queued: {', '.join(reasons)}")


async def add_in_chunks(
    client: httpx.AsyncClient, tenant_id: str, batch: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``batch`` in add-messages calls of :data:`SEND_BATCH`, with a progress bar on a
    terminal when there is more than one call; the answers."""
    answers = []
    with rich.progress.Progress(
        console=rich.console.Console(file=sys.stderr),
        transient=True,
        disable=len(batch) <= SEND_BATCH or not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("queueing", total=len(batch))
        for start in range(0, len(batch), SEND_BATCH):
            chunk = batch[start : start + SEND_BATCH]
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
            progress.advance(task, len(chunk))
    return answers


def post_tenant_command(
    command: str,
    batch: str | None = None,
    /,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    json_output: JsonFlag = False,
) -> None:
    """POST /commands/``command`` for the tenant (or one batch); print what it answers."""
    params = {"tenant_id": tenant_id} | ({"batch_code": batch} if batch else {})
    answer = request(instance, "POST", f"/commands/{command}", params=params)
    show(answer, json_output, lambda a: [batch_state(tenant_id, a)])


def batch_state(tenant_id: str, answer: dict[str, Any]) -> str:
    """What suspend or activate left: which batches wait, how many messages are pending;
    ``ok`` for a command that answers nothing else."""
    if "suspended_batches" not in answer:
        return "ok"
    batches = answer["suspended_batches"]
    state = (
        "every message suspended" if "*" in batches
        else f"batches suspended: {', '.join(batches)}" if batches
        else "sending, nothing suspended"
    )  # fmt: skip
    return f"{tenant_id}: {state}; {answer['pending_messages']} pending"


#: The tenant's commands that are one POST /commands/NAME with an optional batch code,
#: and their help.
BATCH_COMMANDS = {
    "run-now": "Wake the dispatcher and call the tenant's application at once.\n\n"
    "Example: ``mail-proxy myserver acme run-now``",
    "suspend": "Stop sending the tenant's messages, or one batch's (they stay queued).\n\n"
    "Example: ``mail-proxy myserver acme suspend newsletter-12``",
    "activate": "Resume the tenant, or one batch; sending starts at once.\n\n"
    "Example: ``mail-proxy myserver acme activate newsletter-12``",
}
for command_name, summary in BATCH_COMMANDS.items():
    tenant_app.command(
        functools.partial(post_tenant_command, command_name), name=command_name, help=summary
    )
