"""Suppression-list benchmark (not a test): does a large suppression list slow delivery?

Every attempt reads the tenant's suppression list for the message's recipients (one
indexed read). This delivers N messages through the library to an aiosmtpd sink in a
separate process, twice per round and alternating: once with an empty list, once with
``--suppressed`` addresses (default 1,000,000) on the tenant's list — none of them a
recipient, so both runs send every message. Each run has a fresh database (SQLite file,
or a fresh PostgreSQL database with ``--postgres URL``), the list loaded before the
clock starts. Prints one JSON line per run and a summary: delivered msg/s and CPU ms per
message of this process, and the ratio of the large-list runs to the empty-list runs.

    python -m bench.suppression --n 5000 --rounds 2
    python -m bench.suppression --postgres postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from bench.embedded import (
    LOOPBACK,
    add_sink_tenant,
    cpu_s,
    deliver_all,
    free_port,
    start_sink,
)

from mailproxy.adapters.postgres import PostgresStore
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.bounces import Suppression
from mailproxy.ports.store import Store
from mailproxy.service import MailProxy

#: Entries written per store call while loading the list.
LOAD_BATCH = 20_000


def make_store(kind: str, workdir: Path, postgres: str | None) -> tuple[Store, str | None]:
    if postgres is None:
        return SqliteStore(workdir / f"{kind}-{uuid.uuid4().hex}.db"), None
    name = f"mailproxy_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return PostgresStore(postgres.rsplit("/", 1)[0] + f"/{name}"), name


def drop(postgres: str | None, name: str | None) -> None:
    if postgres is None or name is None:
        return
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run(n: int, suppressed: int, port: int, workdir: Path, postgres: str | None) -> dict:
    store, database = make_store("list" if suppressed else "empty", workdir, postgres)
    try:
        proxy = MailProxy(store=store, transports={"smtp": SmtpTransport(egress_allow=LOOPBACK)})
        async with proxy:
            await add_sink_tenant(proxy, port)
            now = time.time()
            for start in range(0, suppressed, LOAD_BATCH):
                entries = [
                    Suppression(
                        tenant_id="bench", address=f"suppressed{i}@example.net",
                        reason="hard_bounce", created_ts=now,
                    )
                    for i in range(start, min(suppressed, start + LOAD_BATCH))
                ]  # fmt: skip
                await proxy.bounce_store.add_suppressions(entries, now)
            cpu0, t0 = cpu_s(), time.perf_counter()
            await deliver_all(proxy, n)
            t1, cpu1 = time.perf_counter(), cpu_s()
    finally:
        drop(postgres, database)
    return {
        "suppressed": suppressed,
        "delivered_msg_s": n / (t1 - t0),
        "cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="messages delivered per run")
    parser.add_argument("--suppressed", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres", help="a PostgreSQL URL (default: SQLite files)")
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    rows: list[dict] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                for size in (0, args.suppressed):
                    row = asyncio.run(run(args.n, size, port, Path(tmp), args.postgres))
                    rows.append(row)
                    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                      for k, v in row.items()}), flush=True)  # fmt: skip
    finally:
        sink.terminate()
        sink.wait(timeout=10)

    def median(size: int, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["suppressed"] == size)

    summary = {
        "store": "postgresql" if args.postgres else "sqlite",
        "n": args.n,
        "suppressed": args.suppressed,
        "throughput_ratio": round(
            median(args.suppressed, "delivered_msg_s") / median(0, "delivered_msg_s"), 3
        ),
        "cpu_ratio": round(
            median(args.suppressed, "cpu_ms_per_msg") / median(0, "cpu_ms_per_msg"), 3
        ),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
