"""The suppression list of one tenant, ``mail-proxy NAME TENANT suppressions list | add |
remove | export``: the addresses its messages are not sent to (hard bounces, complaints,
repeated soft bounces, and entries added by hand). Each command receives the instance as
``instance`` and the tenant id as ``tenant_id``."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from cyclopts import Parameter

from mailproxy.entrypoints.admin import ApiError, download
from mailproxy.entrypoints.cli.apps import (
    Count,
    JsonFlag,
    TargetInstance,
    TargetTenant,
    suppressions_app,
)
from mailproxy.entrypoints.cli.exits import CommandFailed, UsageError
from mailproxy.entrypoints.cli.output import (
    Column,
    local_time,
    present,
    progress,
    request,
    run_api,
    show,
    table,
)
from mailproxy.entrypoints.cli.tenant import read_pages

#: Why an address is suppressed, as the API names it.
Reason = Literal["hard_bounce", "complaint", "soft_bounce", "manual"]
DAY_S = 86_400


@suppressions_app.command(name="list")
def suppressions_list(
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    reason: Reason | None = None,
    search: str | None = None,
    limit: Count = 50,
    every: Annotated[bool, Parameter(name="--all", negative=())] = False,
    json_output: JsonFlag = False,
) -> None:
    """List the tenant's suppressed addresses, in address order.

    The first --limit, or --all, read a page at a time (with a progress bar on a
    terminal). ``since`` is when the address was suppressed, ``expires`` when it will be
    sent to again (never: until removed), ``message`` the message whose bounce or
    complaint suppressed it.

    Example: ``mail-proxy myserver acme suppressions list --reason hard_bounce --search
    example.com``

    Parameters
    ----------
    reason
        Only the addresses suppressed for this reason.
    search
        Only the addresses containing this text (any case).
    limit
        How many addresses at most.
    every
        Every address, however many.
    """
    params = {"tenant_id": tenant_id} | present(reason=reason, q=search)
    wanted = None if every else limit
    with progress("reading suppressions", wanted, wanted=not json_output) as update:
        found = run_api(
            instance,
            lambda c: read_pages(c, "/suppressions", "suppressions", params, wanted, update),
        )
    columns: list[Column] = [
        ("address", lambda s: s["address"]),
        ("reason", lambda s: s["reason"]),
        ("since", lambda s: local_time(s["created_ts"])),
        ("expires", lambda s: "never" if s["expires_ts"] is None else local_time(s["expires_ts"])),
        ("message", lambda s: s["source_message_id"]),
        ("detail", lambda s: s["detail"]),
    ]
    table(found, json_output, columns, "no suppressed addresses", gives_way="detail")


@suppressions_app.command(name="add")
def suppressions_add(
    *addresses: str,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    expires_in: Count | None = None,
    detail: str | None = None,
    json_output: JsonFlag = False,
) -> None:
    """Suppress addresses by hand: the tenant's messages are not sent to them.

    An address already suppressed keeps the stronger reason and the later expiry.

    Example: ``mail-proxy myserver acme suppressions add old@example.com --detail
    "asked us to stop"``

    Parameters
    ----------
    addresses
        The email addresses.
    expires_in
        Send to them again after this many days (default: never, until removed).
    detail
        Why, for people reading the list (one line).
    """
    if not addresses:
        raise UsageError("missing ADDRESSES")
    expires_ts = None if expires_in is None else int(time.time()) + expires_in * DAY_S
    entries = [
        {"address": address} | present(expires_ts=expires_ts, detail=detail)
        for address in addresses
    ]
    answer = request(
        instance,
        "POST",
        "/suppressions",
        params={"tenant_id": tenant_id},
        json={"entries": entries},
    )
    show(answer, json_output, lambda a: [added_line(a["added"], len(addresses))])


def added_line(added: int, given: int) -> str:
    """``suppressed 2 addresses``, and how many were suppressed already and kept as they
    were (their reason was as strong, their expiry as late)."""
    line = f"suppressed {added} address{'' if added == 1 else 'es'}"
    return line + (f" ({given - added} already suppressed)" if added < given else "")


@suppressions_app.command(name="remove")
def suppressions_remove(address: str, *, instance: TargetInstance, tenant_id: TargetTenant) -> None:
    """Send to an address again, whatever suppressed it.

    Example: ``mail-proxy myserver acme suppressions remove old@example.com``

    Parameters
    ----------
    address
        The email address.
    """
    path = f"/suppressions/{quote(address, safe='@+/')}"
    try:
        request(instance, "DELETE", path, params={"tenant_id": tenant_id})
    except ApiError as error:
        # The tenant itself may be what is missing: its error is the instance's own.
        if error.status == HTTPStatus.NOT_FOUND and str(error).startswith("suppression"):
            raise CommandFailed(f"not suppressed: {address}") from None
        raise
    print(f"{address} no longer suppressed")


@suppressions_app.command(name="export")
def suppressions_export(
    *, instance: TargetInstance, tenant_id: TargetTenant, output: Path | None = None
) -> None:
    """Write every suppressed address of the tenant as CSV, to stdout or a file.

    The columns: address, reason, created_ts, expires_ts (epoch seconds; empty: never),
    source_message_id, detail. Written as it arrives, so any size fits.

    Example: ``mail-proxy myserver acme suppressions export --output suppressions.csv``

    Parameters
    ----------
    output
        The file to write (replaced once the whole list is in; default: stdout).
    """
    params = {"tenant_id": tenant_id}
    if output is None:
        sink = sys.stdout.buffer
        sys.stdout.flush()
        run_api(instance, lambda c: download(c, "/suppressions/export", sink.write, params=params))
        sink.flush()
        return
    # Written beside the file and renamed at the end: a failed export leaves no half file.
    partial = output.with_name(f".{output.name}.partial")
    try:
        with partial.open("wb") as file, progress("exporting", None, wanted=True) as update:

            def write(chunk: bytes) -> None:
                file.write(chunk)
                update(advance=chunk.count(b"\n"))

            run_api(instance, lambda c: download(c, "/suppressions/export", write, params=params))
        os.replace(partial, output)
    except OSError as error:
        raise CommandFailed(f"cannot write {output}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    print(f"exported to {output}")
