"""The performance run (not a test): the scenarios of the performance goals against a
real ``mail-proxy serve`` process, and the physical baselines, in one run, so that every
figure has its ratio against a ceiling measured minutes apart on the same machine.

Scenarios, on a fresh SQLite file with default settings (reports allowed to 127.0.0.1):

- ``enqueue``: N messages over HTTP, 100 per request from 16 clients, the tenant
  suspended so that only the enqueue path runs: msg/s, request p50/p99.
- ``delivery``: the tenant resumed, until all N are sent to ``bench/fast_sink.py``:
  msg/s; then until every report is acknowledged by a local receiver.
- ``latency``: an idle queue, one priority-0 message at a time: enqueue reply → arrival
  at the sink, p50/p99.
- the server's CPU ms per message over enqueue + delivery + reports, and its peak RSS.

With ``--instructions`` the server runs under valgrind's callgrind instead, and the run
reports the instructions it executed per message over enqueue + delivery + reports (no
baselines, no rates: the server runs ~50x slower). Unlike CPU time, that count hardly
moves with what else the machine is doing, so two versions of the code can be compared
on a busy machine; use a smaller ``--n`` (2,000 takes a few minutes).

Baselines: ``smtp_ceiling`` (aiosmtplib straight to the same sink over 4 connections, an
EmailMessage built per message) and ``sqlite_ceiling`` (the same JSON bodies decoded with
msgspec and inserted 100 per transaction, WAL, synchronous=FULL).

Prints a table, writes ``results.json`` and a chart ``results.png`` (matplotlib, from
the ``bench`` extra) into ``--out``.

    python bench/run.py [--n 10000] [--out bench/results/latest] [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent))  # the tests' timestamping SMTP sink

from embedded import cpu_s, free_port, message, start_listener, wait_healthy
from http_enqueue import post_batches, process_cpu_s

TOKEN = "bench-run-admin-token"
ADMIN = {"X-API-Token": TOKEN}
BENCH = Path(__file__).resolve().parent
CLIENTS, BATCH, SMTP_CONNECTIONS = 16, 100, 4


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of the process's main thread: the event loop (the rest is the SQLite
    thread and uvicorn's helpers)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_mb(pid: int, field: str) -> float:
    """A memory figure of ``/proc/PID/status`` (``VmRSS``: now, ``VmHWM``: the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def report_receiver() -> Iterator[tuple[str, set[str]]]:
    """A local receiver that acknowledges every report entry; yields its URL and the
    event ids it has seen."""
    seen: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            entries = json.loads(body).get("delivery_report", [])
            seen.update(entry["event_id"] for entry in entries)
            answer = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def service(
    workdir: Path, profile: Path | None = None, callgrind: bool = False
) -> Iterator[tuple[str, int]]:
    """``mail-proxy serve`` on a fresh SQLite file in ``workdir``; with ``profile``, under
    cProfile, which writes its statistics there when the server stops; with
    ``callgrind``, under valgrind (see ``instructions_since_zero``)."""
    port = free_port()
    env = {**os.environ, "GMP_API_TOKEN": TOKEN, "GMP_DB_PATH": str(workdir / "bench.db"),
           "GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8"}  # fmt: skip
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/callgrind.%p"]
    command = [*(valgrind if callgrind else []), sys.executable, *profiler, "-m", "mailproxy",
               "serve", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with (workdir / "server.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, timeout_s=600 if callgrind else 30)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


async def enqueue(url: str, n: int) -> list[float]:
    async with httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=120) as client:
        return await post_batches(client, n, BATCH, CLIENTS)


def wait_for(check: Any, what: str, timeout_s: float, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every_s)


def zero_instructions(pid: int) -> None:
    """Start callgrind's count of ``pid`` afresh (start-up is not counted)."""
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)


def instructions_since_zero(pid: int, workdir: Path) -> int:
    """Instructions ``pid`` (run under callgrind) executed since ``zero_instructions``,
    all its threads: callgrind dumps the count into a file whose ``totals:`` line has it."""
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    dumps = sorted(workdir.glob(f"callgrind.{pid}.*"), key=lambda path: path.stat().st_mtime)
    for line in dumps[-1].read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


def scenarios(
    n: int, workdir: Path, sink_port: int, profile: Path | None = None, callgrind: bool = False
) -> dict[str, float]:
    results: dict[str, float] = {}
    with (
        report_receiver() as (receiver_url, acked),
        service(workdir, profile, callgrind) as (url, pid),
    ):
        admin = httpx.Client(base_url=url, headers=ADMIN, timeout=60)
        admin.post("/tenant", json={"id": "bench", "client_base_url": receiver_url})
        admin.post("/account", json={"id": "sink", "tenant_id": "bench", "host": "127.0.0.1",
                                     "port": sink_port, "use_tls": False, "is_default": True,
                                     "max_connections": SMTP_CONNECTIONS})  # fmt: skip
        admin.post("/commands/suspend", params={"tenant_id": "bench"}).raise_for_status()
        if callgrind:
            zero_instructions(pid)
        cpu0, t0, driver0 = process_cpu_s(pid), time.perf_counter(), cpu_s()
        latencies = asyncio.run(enqueue(url, n))
        t1 = time.perf_counter()
        results["driver_cpu_enqueue_ms_per_msg"] = (cpu_s() - driver0) * 1000 / n
        results["enqueue_msg_s"] = n / (t1 - t0)
        results["enqueue_p50_ms"] = statistics.median(latencies) * 1000
        results["enqueue_p99_ms"] = percentile(latencies, 0.99) * 1000
        cpu1, loop1 = process_cpu_s(pid), main_thread_cpu_s(pid)
        results["cpu_enqueue_ms_per_msg"] = (cpu1 - cpu0) * 1000 / n
        results["rss_after_enqueue_mb"] = status_mb(pid, "VmRSS")
        admin.post("/commands/activate", params={"tenant_id": "bench"}).raise_for_status()
        t2 = time.perf_counter()
        # /status counts the whole queue: asking rarely keeps its cost out of the figures.
        sent = lambda: admin.get("/status").json()["queue"]["sent"] >= n  # noqa: E731
        wait_for(sent, "delivery", 900, every_s=2.0 if callgrind else 0.25)
        t3 = time.perf_counter()
        results["delivery_msg_s"] = n / (t3 - t2)
        wait_for(lambda: len(acked) >= n, "every report acknowledged", 300)
        cpu2, loop2 = process_cpu_s(pid), main_thread_cpu_s(pid)
        results["cpu_send_and_report_ms_per_msg"] = (cpu2 - cpu1) * 1000 / n
        results["cpu_send_and_report_event_loop_ms_per_msg"] = (loop2 - loop1) * 1000 / n
        results["cpu_ms_per_msg"] = (cpu2 - cpu0) * 1000 / n
        results["reports_acknowledged"] = len(acked)
        results["peak_rss_mb"] = status_mb(pid, "VmHWM")
        if callgrind:
            results["instructions_per_msg"] = instructions_since_zero(pid, workdir) / n
        admin.close()
    return results


def idle_latency(workdir: Path, count: int = 200) -> dict[str, float]:
    """Enqueue reply → arrival at an aiosmtpd sink that timestamps each message."""
    from tests.smtp_sink import running_sink

    (workdir / "latency").mkdir()
    with running_sink() as (sink, port), service(workdir / "latency") as (url, _pid):
        admin = httpx.Client(base_url=url, headers=ADMIN, timeout=60)
        admin.post("/tenant", json={"id": "bench"})
        account = {"id": "sink", "tenant_id": "bench", "host": "127.0.0.1", "port": port,
                   "use_tls": False, "is_default": True}  # fmt: skip
        admin.post("/account", json=account)
        delays = []
        for i in range(count):
            body = {"messages": [message(i) | {"tenant_id": "bench", "priority": 0}]}
            admin.post("/commands/add-messages", json=body).raise_for_status()
            replied = time.time()
            wait_for(lambda i=i: len(sink.received) > i, "a message at the sink", 30)
            delays.append(sink.received[i].at - replied)
            time.sleep(0.02)  # idle between messages
        admin.close()
    return {"latency_p50_ms": statistics.median(delays) * 1000,
            "latency_p99_ms": percentile(delays, 0.99) * 1000}  # fmt: skip


async def smtp_ceiling(n: int, port: int) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench.test"
        )
        await client.connect()
        while not queue.empty():
            i = queue.get_nowait()
            built = EmailMessage()
            built["From"], built["To"] = "bench@example.com", f"rcpt{i}@example.com"
            built["Subject"] = f"Benchmark message {i}"
            built.set_content("x" * 1500)
            await client.send_message(built)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(SMTP_CONNECTIONS)))
    return n / (time.perf_counter() - started)


def sqlite_ceiling(n: int, workdir: Path) -> float:
    bodies = [
        msgspec.json.encode({"messages": [message(i) for i in range(s, min(n, s + BATCH))]})
        for s in range(0, n, BATCH)
    ]
    conn = sqlite3.connect(workdir / "ceiling.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE m (id TEXT PRIMARY KEY, data BLOB)")
    started = time.perf_counter()
    for body in bodies:
        messages = msgspec.json.decode(body)["messages"]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO m VALUES (?, ?)", [(m["id"], msgspec.json.encode(m)) for m in messages]
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return n / elapsed


GOALS = {  # figure: (goal, higher is better)
    "enqueue_msg_s": (10_000, True),
    "enqueue_p99_ms": (100, False),
    "delivery_msg_s": (1_000, True),
    "latency_p50_ms": (20, False),
    "latency_p99_ms": (100, False),
    "cpu_ms_per_msg": (1.0, False),
    "peak_rss_mb": (100, False),
}


def table(results: dict[str, float]) -> str:
    lines = ["| figure | measured | goal | met |", "|---|---|---|---|"]
    for key, value in results.items():
        goal = GOALS.get(key)
        if goal is None:
            lines.append(f"| {key} | {value:,.2f} | | |")
            continue
        target, higher = goal
        met = value >= target if higher else value <= target
        lines.append(f"| {key} | {value:,.2f} | {target:,} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def mark_goals(axes: Any, bars: Any, goals: list[float | None]) -> None:
    """Each bar's value written on it, and its goal as a dashed line across it."""
    for bar, goal in zip(bars, goals, strict=True):
        x, width, height = bar.get_x(), bar.get_width(), bar.get_height()
        axes.annotate(f"{height:,.0f}" if height >= 10 else f"{height:.1f}",
                      (x + width / 2, height), ha="center", va="bottom", fontsize=8)  # fmt: skip
        if goal is not None:
            axes.hlines(goal, x - 0.05, x + width + 0.05, colors="black", linestyles="dashed")
    axes.plot([], [], color="black", linestyle="dashed", label="goal")
    axes.legend(loc="upper right", fontsize=8)


def chart(results: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rates, delays) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["enqueue", "sqlite ceiling", "delivery", "smtp ceiling"]
    values = [results["enqueue_msg_s"], results["sqlite_ceiling_msg_s"],
              results["delivery_msg_s"], results["smtp_ceiling_msg_s"]]  # fmt: skip
    bars = rates.bar(names, values, color=["#3b7dd8", "#bbbbbb", "#2e9e5b", "#bbbbbb"])
    mark_goals(rates, bars, [GOALS["enqueue_msg_s"][0], None, GOALS["delivery_msg_s"][0], None])
    rates.set_yscale("log")
    rates.set_ylabel("messages per second (log)")
    rates.set_title("Throughput and its ceilings")
    delay_names = ["enqueue p50", "enqueue p99", "idle p50", "idle p99"]
    delay_values = [results["enqueue_p50_ms"], results["enqueue_p99_ms"],
                    results["latency_p50_ms"], results["latency_p99_ms"]]  # fmt: skip
    bars = delays.bar(delay_names, delay_values, color="#d8843b")
    goals = [None, GOALS["enqueue_p99_ms"][0], GOALS["latency_p50_ms"][0],
             GOALS["latency_p99_ms"][0]]  # fmt: skip
    mark_goals(delays, bars, goals)
    delays.set_ylabel("milliseconds")
    delays.set_title("Request time and accept → SMTP sink")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def count_instructions(n: int) -> dict[str, float]:
    """The delivery scenario with the server under callgrind: instructions per message."""
    sink_port = free_port()
    sink = start_listener([sys.executable, str(BENCH / "fast_sink.py"), str(sink_port)], sink_port)
    try:
        with tempfile.TemporaryDirectory() as folder:
            measured = scenarios(n, Path(folder), sink_port, callgrind=True)
    finally:
        sink.terminate()
        sink.wait()
    return {"n": n, "instructions_per_msg": measured["instructions_per_msg"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "latest")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the enqueue/delivery server under cProfile (slower: figures are not "
        "comparable), write serve.prof into --out and print where its CPU went",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="run only enqueue + delivery + reports, the server under valgrind's callgrind, "
        "and print the instructions it executed per message (repeatable on a busy machine)",
    )
    args = parser.parse_args()
    if args.instructions:
        print(json.dumps(count_instructions(args.n), indent=2))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    sink_port = free_port()
    sink = start_listener([sys.executable, str(BENCH / "fast_sink.py"), str(sink_port)], sink_port)
    try:
        with tempfile.TemporaryDirectory() as folder:
            workdir = Path(folder)
            results = {"n": float(args.n)}
            results["smtp_ceiling_msg_s"] = asyncio.run(smtp_ceiling(args.n, sink_port))
            results["sqlite_ceiling_msg_s"] = sqlite_ceiling(args.n, workdir)
            profile = args.out / "serve.prof" if args.profile else None
            results |= scenarios(args.n, workdir, sink_port, profile)
            results |= idle_latency(workdir)
    finally:
        sink.terminate()
        sink.wait()
    results["delivery_to_smtp_ceiling"] = results["delivery_msg_s"] / results["smtp_ceiling_msg_s"]
    results["enqueue_to_sqlite_ceiling"] = (
        results["enqueue_msg_s"] / results["sqlite_ceiling_msg_s"]
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    if args.profile:
        pstats.Stats(str(args.out / "serve.prof")).sort_stats("tottime").print_stats(30)
    try:
        chart(results, args.out / "results.png")
    except ImportError:
        print("(no chart: install the bench extra for matplotlib)")


if __name__ == "__main__":
    main()
