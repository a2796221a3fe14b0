"""What the instance and tenant commands share: one API session on the instance, and
printing a result as lines for people or JSON for scripts.

Lines for people never show Python's reprs: an absent value (null, an empty list or
object) is :data:`ABSENT`, an instant (a field named ``*_ts`` or ``*_at``, epoch seconds
in the API) is local ISO time, booleans are yes/no and an object is its fields in a row
(:func:`shown`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import httpx
import rich.box
import rich.console
import rich.progress
import rich.table
import rich.text

from mailproxy.entrypoints.admin import call, connect
from mailproxy.entrypoints.instances import Instance

#: The width of a table written to a pipe or file: no line is cut or wrapped.
UNBOUNDED = 100_000

#: A table column: its header and how to read its cell from a row.
Column = tuple[str, Callable[[dict[str, Any]], object]]


def run_api(instance: Instance, steps: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run ``steps`` with a client on the instance's API (running or stopped)."""

    async def go() -> Any:
        async with connect(instance) as client:
            return await steps(client)

    return asyncio.run(go())


def request(instance: Instance, method: str, path: str, **options: Any) -> dict[str, Any]:
    """One API call on the instance; its answer."""
    answer: dict[str, Any] = run_api(instance, lambda c: call(c, method, path, **options))
    return answer


def note_if_stopped(instance: Instance) -> None:
    """For commands that queue or wake deliveries: a stopped instance takes them (its
    database is written) but sends nothing until it is started."""
    if instance.pid() is None:
        print(
            f"note: {instance.name} is not running: nothing is sent until "
            f"mail-proxy start {instance.name}",
            file=sys.stderr,
        )


def present(**fields: Any) -> dict[str, Any]:
    """The fields that were given (not None), for a request body."""
    return {key: value for key, value in fields.items() if value is not None}


#: How an absent value reads in lines for people.
ABSENT = "—"


def local_time(ts: float) -> str:
    """An instant in epoch seconds as local ISO time, to the second."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def label(key: str) -> str:
    """A field name as words: ``next_attempt_ts`` → ``next attempt``."""
    return key.removesuffix("_ts").replace("_", " ")


def shown(key: str, value: Any) -> str:
    """The value of field ``key`` of an API answer, as people read it."""
    if value is None or value == [] or value == {}:
        return ABSENT
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith(("_ts", "_at")) and isinstance(value, int | float):
        return local_time(value)
    if isinstance(value, list):
        return ", ".join(shown(key, item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{label(k)} {shown(k, v)}" for k, v in value.items())
    return str(value)


def fields(record: dict[str, Any], skip: Iterable[str] = ()) -> list[str]:
    """A record as ``key: value`` lines, values aligned, without the fields in ``skip``."""
    kept = {k: v for k, v in record.items() if k not in set(skip)}
    width = max((len(k) for k in kept), default=0) + 1
    return [f"{k + ':':<{width}} {shown(k, v)}" for k, v in kept.items()]


def counts(by_status: dict[str, int]) -> str:
    """Counts by status, the zero ones left out, or ``empty``."""
    return ", ".join(f"{status} {n}" for status, n in by_status.items() if n) or "empty"


def suspended(batches: list[str]) -> str | None:
    """A tenant's suspended batches: ``*`` is all of them."""
    return "all" if "*" in batches else ", ".join(batches) or None


def show(data: Any, json_output: bool, lines: Callable[[Any], list[str]]) -> None:
    if json_output:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for line in lines(data):
            print(line)


def table(
    rows: list[dict[str, Any]],
    json_output: bool,
    columns: list[Column],
    empty: str,
    *,
    gives_way: str | None = None,
) -> None:
    """Rows as a table for people (or JSON for scripts); ``empty`` when there are none.
    Cells read as :func:`shown` makes them. Piped, the table is as wide as its cells: a
    script reads every cell whole. On a terminal narrower than the table, the column
    headed ``gives_way`` (free text, such as an error) is cut short with an ellipsis,
    keeping each row on one line and the other cells whole as far as the width allows;
    without one, the cells wrap."""
    if json_output:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        print(empty)
        return
    grid = rich.table.Table(box=rich.box.SIMPLE_HEAD, pad_edge=False)
    for header, _ in columns:
        # Only the column that gives way wraps, so it is the one rich narrows first.
        grid.add_column(header, no_wrap=gives_way is not None and header != gives_way)
    for row in rows:
        # Text, not str: a cell such as an SMTP error is not rich markup. The cell of
        # the column that gives way is cut, not wrapped: one line per row.
        grid.add_row(*(
            rich.text.Text(" ".join(shown("", cell(row)).split()), no_wrap=True,
                           overflow="ellipsis") if header == gives_way
            else rich.text.Text(shown("", cell(row)))
            for header, cell in columns
        ))  # fmt: skip
    width = None if sys.stdout.isatty() else UNBOUNDED
    rich.console.Console(file=sys.stdout, width=width).print(grid)


@contextlib.contextmanager
def progress(description: str, total: int | None, *, wanted: bool) -> Iterator[Any]:
    """A progress bar on stderr while the block runs (a pulsing one for an unknown
    ``total``), gone when it ends; shown only on a terminal and when the caller
    ``wanted`` one (not with ``--json``). Yields rich's ``update`` for its task:
    ``update(advance=n)``, ``update(description=...)``."""
    with rich.progress.Progress(
        rich.progress.SpinnerColumn(),
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn()
        if total is not None
        else rich.progress.TextColumn("{task.completed}"),
        rich.progress.TimeElapsedColumn(),
        console=rich.console.Console(file=sys.stderr),
        transient=True,
        disable=not (wanted and sys.stderr.isatty()),
    ) as bar:
        yield functools.partial(bar.update, bar.add_task(description, total=total))
