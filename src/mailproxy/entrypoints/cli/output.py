"""What the instance and tenant commands share: one API session on the instance, and
printing a result as lines for people or JSON for scripts."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import rich.box
import rich.console
import rich.table

from mailproxy.entrypoints.admin import call, connect
from mailproxy.entrypoints.instances import Instance

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


def present(**fields: Any) -> dict[str, Any]:
    """The fields that were given (not None), for a request body."""
    return {key: value for key, value in fields.items() if value is not None}


def show(data: Any, json_output: bool, lines: Callable[[Any], list[str]]) -> None:
    if json_output:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        for line in lines(data):
            print(line)


def table(rows: list[dict[str, Any]], json_output: bool, columns: list[Column], empty: str) -> None:
    """Rows as a table for people (or JSON for scripts); ``empty`` when there are none."""
    if json_output:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        print(empty)
        return
    shown = rich.table.Table(box=rich.box.SIMPLE_HEAD, pad_edge=False)
    for header, _ in columns:
        shown.add_column(header)
    for row in rows:
        shown.add_row(*("" if (v := cell(row)) is None else str(v) for _, cell in columns))
    rich.console.Console(file=sys.stdout, soft_wrap=True).print(shown)
