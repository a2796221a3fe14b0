"""The commands of one tenant, ``mail-proxy NAME TENANT ...``: ``messages ...``,
``send``, ``run-now``, ``suspend`` and ``activate`` (``accounts ...`` are in
:mod:`.accounts`, ``suppressions ...`` in :mod:`.suppressions`). Each receives the
instance as ``instance`` and the tenant id as ``tenant_id``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
from cyclopts import Parameter

from mailproxy.domain.model import Status
from mailproxy.entrypoints.admin import ApiError, call, message_from_eml
from mailproxy.entrypoints.cli.accounts import account_not_found
from mailproxy.entrypoints.cli.apps import (
    Count,
    JsonFlag,
    TargetInstance,
    TargetTenant,
    messages_app,
    tenant_app,
)
from mailproxy.entrypoints.cli.exits import CommandFailed, UsageError
from mailproxy.entrypoints.cli.output import (
    Column,
    fields,
    local_time,
    note_if_stopped,
    present,
    progress,
    request,
    run_api,
    show,
    shown,
    table,
)
from mailproxy.entrypoints.instances import Instance

#: The priorities ``send`` accepts: the API's names and numbers.
PriorityName = Literal["immediate", "high", "medium", "low", "0", "1", "2", "3"]

#: Messages per add-messages call when sending files.
SEND_BATCH = 100
#: Items per call of a paged listing (GET /messages, GET /suppressions).
PAGE = 500


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
        found = run_api(
            instance, lambda c: read_pages(c, "/messages", "messages", params, wanted, update)
        )
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
    path: str,
    key: str,
    params: dict[str, Any],
    wanted: int | None,
    update: Callable[..., None],
) -> list[dict[str, Any]]:
    """The items a cursor-paged listing (GET ``path``, items under ``key``, such as
    /messages and ``messages``) gives with ``params``, ``wanted`` at most (all for None),
    in pages of :data:`PAGE`; ``update`` advanced after each."""
    items: list[dict[str, Any]] = []
    cursor: dict[str, str] = {}
    while wanted is None or len(items) < wanted:
        size = PAGE if wanted is None else min(PAGE, wanted - len(items))
        page = await call(client, "GET", path, params=params | cursor | {"limit": size})
        items += page[key]
        update(advance=len(page[key]))
        if not page["next_cursor"]:
            break
        cursor = {"cursor": page["next_cursor"]}
    return items


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


#: The reports kept with a sent message, as ``messages show`` lists them: the title and
#: each entry's fields after its time, in order.
REPORTS = {
    "bounces": ("type", "status", "recipient", "diagnostic", "source"),
    "complaints": ("feedback_type", "recipient"),
    "delays": ("status", "recipient", "diagnostic"),
}


def message_lines(message: dict[str, Any]) -> list[str]:
    """A message's fields, why it has not gone yet (while it has not), its history, and
    the bounces, complaints and delays reported of it (those there are)."""
    record = {k: v for k, v in message.items() if k not in ("history", "why", *REPORTS)}
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
    for title, columns in REPORTS.items():
        if entries := message.get(title):
            lines.append(f"{title}:")
            lines += [report_line(entry, columns) for entry in entries]
    return lines


def report_line(entry: dict[str, Any], columns: tuple[str, ...]) -> str:
    """One bounce, complaint or delay: its time, then the ``columns`` it has, on one line
    (a diagnostic is a remote server's text: its line breaks are folded)."""
    cells = [" ".join(str(entry[c]).split()) for c in columns if entry.get(c) is not None]
    return "  ".join(["", local_time(entry["ts"]), *cells])


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
    if result["queued"] and not json_output:
        note_if_stopped(instance)
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
    note_if_stopped(instance)


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
    pending = answer["pending_messages"]
    waiting = (
        f"{pending} pending" if pending
        else f"batch {batch} has no pending messages" if batch
        else "no pending messages"
    )  # fmt: skip
    show(answer, json_output, lambda _: [f"{tenant_id}: {state}; {waiting}"])
    if command == "activate" and not json_output:
        note_if_stopped(instance)


#: ``suspend`` and ``activate``, and their help.
SUSPENSIONS = {
    "suspend": "Stop sending the tenant's messages, or one batch's (they stay queued).\n\n"
    "Example: ``mail-proxy myserver acme suspend newsletter-12``",
    "activate": "Resume the tenant, or one batch; sending starts at once.\n\n"
    "Example: ``mail-proxy myserver acme activate newsletter-12``",
}
for command_name, summary in SUSPENSIONS.items():
    tenant_app.command(functools.partial(suspension, command_name), name=command_name, help=summary)
