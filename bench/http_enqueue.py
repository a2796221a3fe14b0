"""HTTP enqueue benchmark under two ASGI servers (not a test).

Starts the same app (``mailproxy.entrypoints.http:from_environment``, SQLite with
synchronous=FULL, defaults otherwise) under uvicorn and under granian, one process each,
and posts N messages in batches of B from C concurrent clients to a tenant whose
dispatch is suspended (so only the enqueue path runs). Prints one JSON line per server:
msg/s, request p50/p99 and the server's CPU ms per message.

    python bench/http_enqueue.py --n 10000 --batch 100 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

sys.path.insert(0, str(Path(__file__).parent))

from embedded import free_port, message, wait_healthy

TOKEN = "bench-admin-token"
FACTORY = "mailproxy.entrypoints.http:from_environment"


def command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--factory", FACTORY, "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    return [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--host",
            "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
            FACTORY]  # fmt: skip


def process_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its live child processes (granian runs its workers as
    children)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def load(url: str, n: int, batch: int, clients: int) -> list[float]:
    headers = {"X-API-Token": TOKEN}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        await client.post("/tenant", json={"id": "bench"})
        await client.post(
            "/account",
            json={
                "id": "sink",
                "tenant_id": "bench",
                "kind": "capture",
                "is_default": True,
            },
        )
        await client.post("/commands/suspend", params={"tenant_id": "bench"})
        return await post_batches(client, n, batch, clients)


async def post_batches(client: httpx.AsyncClient, n: int, batch: int, clients: int) -> list[float]:
    """Post N bench messages for tenant ``bench`` in batches from concurrent clients;
    return each request's seconds. The bodies are encoded before the clock starts: the
    load generator shares the machine with the server and should cost it little."""
    bodies = [
        (
            len(ids),
            msgspec.json.encode({"messages": [message(i) | {"tenant_id": "bench"} for i in ids]}),
        )
        for ids in (range(i, min(n, i + batch)) for i in range(0, n, batch))
    ]
    bodies.reverse()
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}

    async def worker() -> None:
        while bodies:
            count, body = bodies.pop()
            started = time.perf_counter()
            answer = await client.post("/commands/add-messages", content=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if answer.status_code != 200 or answer.json()["queued"] != count:
                raise RuntimeError(f"enqueue failed: {answer.status_code} {answer.text}")

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies


def run(server: str, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", ""), "GMP_API_TOKEN": TOKEN,
           "GMP_DB_PATH": str(workdir / f"{server}.db")}  # fmt: skip
    process = subprocess.Popen(command(server, port), env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        cpu0, t0 = process_cpu_s(process.pid), time.perf_counter()
        latencies = asyncio.run(load(url, args.n, args.batch, args.clients))
        elapsed, cpu = time.perf_counter() - t0, process_cpu_s(process.pid) - cpu0
    finally:
        process.terminate()
        process.wait(timeout=30)
    latencies.sort()
    return {
        "server": server, "n": args.n, "batch": args.batch, "clients": args.clients,
        "enqueue_msg_s": round(args.n / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "server_cpu_ms_per_msg": round(cpu * 1000 / args.n, 3),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--servers", nargs="+", default=["uvicorn", "granian"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for server in args.servers:
            print(json.dumps(run(server, args, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
