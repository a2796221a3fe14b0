"""Named queries and the transaction object every operation runs on."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from mailproxy.adapters.sql.rows import COLUMNS

_HERE = Path(__file__).parent
#: Delta rows past which a maintained total is folded (a rate key's into one row, the
#: message counts into one row per tenant and status).
FOLD_AT = 64


def sections(filename: str) -> dict[str, str]:
    """The ``-- name: NAME`` sections of a ``.sql`` file next to this module, in order."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (_HERE / filename).read_text().splitlines():
        if line.startswith("-- name: "):
            current = found.setdefault(line.removeprefix("-- name: ").strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


class Queries:
    """The named queries of ``queries.sql`` overlaid with an engine's file; attribute
    access reads one (``tx.q.claim``); ``{in_list}`` becomes the engine's ``Tx.IN_LIST``."""

    def __init__(self, engine_file: str, in_list: str) -> None:
        prefixed = ", ".join(f"m.{c.strip()}" for c in COLUMNS.split(","))
        self._text = {
            name: sql.replace("{columns}", COLUMNS)
            .replace("{m_columns}", prefixed)
            .replace("{in_list}", in_list)
            for name, sql in {**sections("queries.sql"), **sections(engine_file)}.items()
        }

    def __getattr__(self, name: str) -> str:
        try:
            return self._text[name]
        except KeyError:
            raise AttributeError(name) from None


class Tx:
    """One open transaction (or, for reads, one connection): the operations' only view of
    the database. SQL is written with ``?`` placeholders.

    Everything in which the engines differ is named here and filled in by ``SqliteTx`` and
    ``PostgresTx``: the row-lock suffixes, ``IN_LIST`` with :meth:`listed`,
    :meth:`lock_keys`, :meth:`sequence_numbers`, :meth:`queue_heads`, :meth:`wake_queue` /
    :meth:`wake_reports`, :meth:`fold_counts`, :meth:`fold_rate_total` and the engine's
    queries file.
    """

    #: Appended to a SELECT whose rows the transaction goes on to change.
    FOR_UPDATE: ClassVar[str] = ""
    #: Appended to a SELECT of rows another process may be working on: skip those.
    SKIP_LOCKED: ClassVar[str] = ""
    #: ``column {in_list}`` in the queries: the column is one of a list of values, bound
    #: as :meth:`listed` to one placeholder whatever its length (the statement is prepared
    #: once: a set of rows costs one statement, not one per row).
    IN_LIST: ClassVar[str]
    q: ClassVar[Queries]

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def _driver_sql(self, sql: str) -> str:
        """``sql`` in the driver's placeholder style (the queries are written with ``?``)."""
        return sql

    def _execute(self, sql: str, args: Sequence[Any] | dict[str, Any]) -> Any:
        return self.cursor.execute(self._driver_sql(sql), args)

    def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._execute(sql, args).fetchone()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return list(self._execute(sql, args).fetchall())

    def run(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Execute; return how many rows it changed."""
        return int(self._execute(sql, args).rowcount)

    def many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        # sqlite3 answers with a cursor; psycopg keeps the count on its own cursor.
        done = self.cursor.executemany(self._driver_sql(sql), rows)
        return int((done if done is not None else self.cursor).rowcount)

    # --- the engine differences ----------------------------------------------------------

    def listed(self, values: Iterable[Any]) -> Any:
        """``values`` as the one parameter of an ``{in_list}``."""
        raise NotImplementedError

    def lock_keys(self, keys: Sequence[str]) -> None:
        """Serialise rate reservations on ``keys`` across processes until commit."""

    def sequence_numbers(self, count: int) -> list[int]:
        """``count`` new acceptance sequence numbers, increasing."""
        raise NotImplementedError

    def queue_heads(self, rooms: Sequence[tuple[str, str, int]], now: float) -> list[Any]:
        """Message rows: per (tenant, account, room), the first ``room`` due messages in
        :func:`mailproxy.domain.policy.queue_order`, locked unless another process holds
        them."""
        raise NotImplementedError

    def rate_total(self, key: str) -> int:
        """The live reservations on ``key`` (kept by triggers: a key below a window's
        limit has room without a scan). Call with the key locked (:meth:`lock_keys`)."""
        total, rows = self.one(self.q.rate_total, (key,))
        if rows > FOLD_AT:
            self.fold_rate_total(key)
        return int(total)

    def fold_rate_total(self, key: str) -> None:
        """Bring the key's total to one row, where the engine keeps it as deltas."""

    def fold_counts(self) -> None:
        """Bring the maintained message counts to one row per (tenant, status), where the
        engine keeps them as deltas."""

    def wake_queue(self) -> None:
        """On commit, tell other processes that messages became claimable."""

    def wake_reports(self, tenant_id: str) -> None:
        """On commit, tell other processes that the tenant has new report events."""


@functools.lru_cache(maxsize=512)
def percent_style(sql: str) -> str:
    """``?`` placeholders as ``%s`` (the text holds no ``?`` or ``%`` otherwise)."""
    return sql.replace("%", "%%").replace("?", "%s")
