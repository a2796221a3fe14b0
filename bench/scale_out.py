"""Scale-out benchmark on PostgreSQL (not a test): delivery throughput of 1, 2 and 3
``mail-proxy serve`` processes sharing one database.

For each process count: a fresh database, the processes, and ``bench/fast_sink.py`` on
127.0.0.1 answering the end of DATA after ``--latency-ms`` (20 by default: a provider's
queueing, so that waiting, not CPU, dominates as it does in production). N messages are
accepted while the tenant is suspended, then the tenant is activated and the clock runs
until every message is sent. Prints one JSON line per process count: delivered msg/s, the
ratio to one process in the same run, CPU ms per message of the mailproxy processes, and
of those together with the PostgreSQL server's processes (every process of the server's
user: the backends they used, and the server's own workers) over the same span.

With ``--sqlite``, the same steps on a SQLite file instead (one process is what SQLite
serves; the figure beside which the PostgreSQL path's cost is judged).

With ``--statements`` (a PostgreSQL server on this machine whose log the run may read,
``--pg-log``), the bench database logs every statement while the messages are delivered:
the JSON line then says how many statements each delivered message cost, and of which
kinds (the figure behind "round trips per message" in docs/performance.md).

    python bench/scale_out.py [--n 3000] [--processes 1 2 3] [--latency-ms 20]
        [--connections 3] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]
        [--statements [--pg-log /var/log/postgresql/postgresql-15-main.log]] [--sqlite]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).parent))

from embedded import free_port, wait_healthy
from http_enqueue import process_cpu_s

TOKEN = "bench-scale-out-admin-token"
ADMIN = {"X-API-Token": TOKEN}
BENCH = Path(__file__).resolve().parent


@contextlib.contextmanager
def database(dsn: str) -> Iterator[str]:
    name = f"mailproxy_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        # A URL: that is what selects PostgreSQL in storage.db_path.
        yield urllib.parse.urlsplit(dsn)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def processes(command_lists: list[list[str]], envs: list[dict[str, str]]) -> Iterator[list[int]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command, env in zip(command_lists, envs, strict=True):
            started.append(
                subprocess.Popen(
                    command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        yield [p.pid for p in started]
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def postgres_cpu_s() -> float:
    """CPU seconds of every live process of the ``postgres`` user (the server: its
    backends and its own workers)."""
    try:
        uid = _postgres_uid()
    except KeyError:
        return 0.0
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            owner = next(
                int(line.split()[1]) for line in status.read_text().splitlines()
                if line.startswith("Uid:")
            )  # fmt: skip
            if owner != uid:
                continue
            fields = (status.parent / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, StopIteration):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _postgres_uid() -> int:
    import pwd

    return pwd.getpwnam("postgres").pw_uid


def log_statements(admin_dsn: str, dsn: str) -> str:
    """Make the database of ``dsn`` log every statement; its name (in the log's lines)."""
    name = urllib.parse.urlsplit(dsn).path.lstrip("/")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} SET log_min_duration_statement = 0").format(
                sql.Identifier(name)
            )
        )
    return name


#: A statement's run in the log: ``execute <name>: SQL`` (extended protocol; its parse
#: and bind steps are logged too, and not counted) or ``statement: SQL`` (simple).
_RUN = re.compile(r"duration: [0-9.]+ ms +(?:execute [^:]+|statement): (.*)", re.S)
#: Comment lines in front of the statement proper.
_COMMENTS = re.compile(r"^(\s*--[^\n]*\n)+")


def statement_kinds(log: Path, since: int, database_name: str) -> collections.Counter[str]:
    """The statements the server ran for ``database_name`` after byte ``since`` of its
    log, by kind: their first words, comments left out."""
    kinds: collections.Counter[str] = collections.Counter()
    entries: list[str] = []
    with log.open("rb") as lines:
        lines.seek(since)
        for raw in lines:
            line = raw.decode(errors="replace")
            if line[:2].isdigit() or not entries:  # a new entry starts with its time
                entries.append(line)
            else:  # the statement goes on over the next lines
                entries[-1] += line
    for entry in entries:
        run = _RUN.search(entry)
        if run is None or f"@{database_name} " not in entry.split("\n", 1)[0]:
            continue
        text = " ".join(_COMMENTS.sub("", run[1].lstrip()).split())
        kinds[text[:60]] += 1
    return kinds


def sent_by(url: str) -> int:
    """The messages a process sent, from its own metrics."""
    text = httpx.get(f"{url}/metrics", headers=ADMIN, timeout=10).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("gmp_sent_total{")
    )


def run(size: int, args: argparse.Namespace) -> dict[str, float]:
    sink_port = free_port()
    sink = [sys.executable, str(BENCH / "fast_sink.py"), str(sink_port), str(args.latency_ms)]
    with (
        tempfile.TemporaryDirectory() as folder,
        contextlib.nullcontext(str(Path(folder, "bench.db")))
        if args.sqlite
        else database(args.dsn) as dsn,
        processes([sink], [dict(os.environ)]),
    ):
        logged = log_statements(args.dsn, dsn) if args.statements and not args.sqlite else None
        ports = [free_port() for _ in range(size)]
        commands, envs = [], []
        for n, port in enumerate(ports):
            Path(folder, f"p{n}").mkdir()
            commands.append(
                [sys.executable, "-m", "mailproxy", "serve", "--host", "127.0.0.1",
                 "--port", str(port)]
            )  # fmt: skip
            envs.append(
                {**os.environ, "GMP_DB_PATH": dsn, "GMP_API_TOKEN": TOKEN,
                 "GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8",
                 "GMP_DELIVERY_WORKER_ID": f"bench-{n}", "GMP_HOME": str(Path(folder, f"p{n}"))}
            )  # fmt: skip
        with processes(commands, envs) as pids:
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            for url in urls:
                wait_healthy(url)
            with httpx.Client(base_url=urls[0], headers=ADMIN, timeout=60) as admin:
                admin.post("/tenant", json={"id": "bench"}).raise_for_status()
                account = {"id": "main", "tenant_id": "bench", "host": "127.0.0.1",
                           "port": sink_port, "use_tls": False, "is_default": True,
                           "max_connections": args.connections}  # fmt: skip
                admin.post("/account", json=account).raise_for_status()
                admin.post("/commands/suspend", params={"tenant_id": "bench"}).raise_for_status()
                for start in range(0, args.n, 100):
                    batch = [
                        {
                            "id": f"m{i}",
                            "tenant_id": "bench",
                            "from": "bench@example.com",
                            "to": [f"r{i}@example.com"],
                            "subject": f"bench {i}",
                            "body": "hello " * 40,
                        }
                        for i in range(start, min(start + 100, args.n))
                    ]
                    admin.post("/commands/add-messages", json={"messages": batch})
                cpu_before = sum(process_cpu_s(pid) for pid in pids)
                server_before = postgres_cpu_s()
                log_mark = args.pg_log.stat().st_size if logged else 0
                began = time.perf_counter()
                admin.post("/commands/activate", params={"tenant_id": "bench"}).raise_for_status()
                # /status counts the whole queue: asked twice a second, its cost stays
                # out of the figures (a tenth of a second of the run at most).
                while admin.get("/status").json()["queue"]["sent"] < args.n:
                    time.sleep(0.5)
                elapsed = time.perf_counter() - began
                cpu = sum(process_cpu_s(pid) for pid in pids) - cpu_before
                server_cpu = postgres_cpu_s() - server_before
            shares = [sent_by(url) for url in urls]
    figures: dict[str, Any] = {}
    if logged:
        kinds = statement_kinds(args.pg_log, log_mark, logged)
        figures["statements_per_msg"] = round(sum(kinds.values()) / args.n, 2)
        figures["statements_by_kind_per_msg"] = {
            kind: round(count / args.n, 2) for kind, count in kinds.most_common(20)
        }
    return figures | {"processes": size, "n": args.n, "delivered_per_s": round(args.n / elapsed, 1),
            "cpu_ms_per_msg": round(cpu * 1000 / args.n, 2),
            **({} if args.sqlite else {
                "with_postgres_cpu_ms_per_msg": round((cpu + server_cpu) * 1000 / args.n, 2)
            }),
            "sent_by_process": shares}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=3)
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--statements", action="store_true")
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument(
        "--pg-log", type=Path, default=Path("/var/log/postgresql/postgresql-15-main.log")
    )
    args = parser.parse_args()
    baseline = None
    for size in args.processes:
        result = run(size, args)
        baseline = baseline or result["delivered_per_s"]
        result["ratio_to_first"] = round(result["delivered_per_s"] / baseline, 2)
        result["latency_ms"] = args.latency_ms
        result["connections_per_process"] = args.connections
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
