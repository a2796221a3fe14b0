"""SMTP submission benchmark (not a test): messages accepted per second over SMTP, beside
the ceiling of an aiosmtpd sink measured in the same run.

Starts ``mail-proxy serve`` on a fresh SQLite file with SMTP submission on, a tenant
whose messages wait (suspended: this measures acceptance, not delivery), and sends N
messages of about 1 KB over 1 and over 8 connections, each connection authenticating
once and sending its share one after the other (``aiosmtplib``). The ceiling is the same
clients and messages against ``python -m aiosmtpd`` with its discarding handler (no
AUTH, no storage). Prints one JSON line per connection count: accepted msg/s, the ratio
to the ceiling, and the CPU ms per message of the server and of the sink (from /proc).

    python bench/submission.py [--n 3000] [--connections 1 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib
import httpx

sys.path.insert(0, str(Path(__file__).parent))

from embedded import free_port, start_listener, wait_healthy
from http_enqueue import process_cpu_s

TOKEN = "bench-submission-admin-token"
BODY = ("All work and no play makes a message of about one kilobyte. " * 15)[:900]


def message(n: int) -> bytes:
    return (
        f"From: Bench <bench@example.com>\r\nTo: rcpt{n}@example.com\r\n"
        f"Subject: Benchmark message {n}\r\n\r\n{BODY}\r\n"
    ).encode()


async def send_all(port: int, n: int, connections: int, auth: tuple[str, str] | None) -> float:
    """Send ``n`` messages over ``connections`` connections; the seconds it took."""
    shares = [range(c, n, connections) for c in range(connections)]

    async def connection(share: range) -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench.test"
        )
        await client.connect()
        if auth is not None:
            await client.login(*auth)
        for i in share:
            await client.sendmail("bench@example.com", [f"rcpt{i}@example.com"], message(i))
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection(share) for share in shares))
    return time.perf_counter() - started


async def prepare(url: str) -> str:
    """Tenant ``bench`` (suspended) with a capture account; its API key."""
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Token": TOKEN}, timeout=30) as api:
        created = (await api.post("/tenant", json={"id": "bench"})).json()
        await api.post("/account", json={"id": "sink", "tenant_id": "bench", "kind": "capture",
                                         "is_default": True})  # fmt: skip
        await api.post("/commands/suspend", params={"tenant_id": "bench"})
        return str(created["api_key"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for connections in args.connections:
            http_port, smtp_port, sink_port = free_port(), free_port(), free_port()
            env = {
                **os.environ, "GMP_DB_PATH": str(Path(tmp) / f"bench-{connections}.db"),
                "GMP_API_TOKEN": TOKEN, "GMP_SUBMISSION_PORT": str(smtp_port),
                "GMP_LOGGING_LEVEL": "warning",
            }  # fmt: skip
            server = subprocess.Popen(
                [sys.executable, "-m", "mailproxy", "serve", "--host", "127.0.0.1",
                 "--port", str(http_port)],
                env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            sink = start_listener(
                [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
                 "-l", f"127.0.0.1:{sink_port}"],
                sink_port,
            )  # fmt: skip
            try:
                url = f"http://127.0.0.1:{http_port}"
                wait_healthy(url)
                key = asyncio.run(prepare(url))
                cpu0 = process_cpu_s(server.pid)
                seconds = asyncio.run(send_all(smtp_port, args.n, connections, ("bench", key)))
                cpu = process_cpu_s(server.pid) - cpu0
                sink_cpu0 = process_cpu_s(sink.pid)
                ceiling = asyncio.run(send_all(sink_port, args.n, connections, None))
                sink_cpu = process_cpu_s(sink.pid) - sink_cpu0
            finally:
                for process in (server, sink):
                    process.terminate()
                    process.wait(timeout=30)
            row = {
                "connections": connections,
                "n": args.n,
                "accepted_msg_s": round(args.n / seconds, 1),
                "sink_ceiling_msg_s": round(args.n / ceiling, 1),
                "ratio_to_ceiling": round(ceiling / seconds, 3),
                "server_cpu_ms_per_msg": round(cpu * 1000 / args.n, 3),
                # What aiosmtpd alone costs per message (no AUTH, no storage): the floor
                # under the listener's own figure.
                "sink_cpu_ms_per_msg": round(sink_cpu * 1000 / args.n, 3),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
