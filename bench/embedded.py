"""Embedded delivery benchmark (not a test).

Submits N messages through the library on a fresh SQLite file (synchronous=FULL, the
default) and delivers them with the dispatcher to an aiosmtpd sink running in a separate
process on 127.0.0.1. Prints one JSON line per N: enqueue msg/s, delivered msg/s, CPU ms
per message of this process (SQLite thread included, sink excluded), and the same-run
baseline: raw aiosmtplib sending the same number of pre-rendered messages over as many
connections as the account allows (3), with no queue at all.

    python bench/embedded.py --n 1000 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

import aiosmtplib
import httpx

from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.model import Status
from mailproxy.service import MailProxy

#: The sink is on loopback, which the egress rule refuses unless it is allowed.
LOOPBACK = parse_networks("127.0.0.0/8")

BATCH = 100
CONNECTIONS = 3


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    return start_listener(
        [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
         "-l", f"127.0.0.1:{port}"],
        port,
    )  # fmt: skip


def start_listener(command: list[str], port: int) -> subprocess.Popen[bytes]:
    """Start ``command`` and return once it accepts connections on 127.0.0.1:``port``."""
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command[0]} did not start listening on {port}")


def wait_healthy(url: str, timeout_s: float = 30.0) -> None:
    """Return once ``url``/health answers 200; raise after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def message(n: int) -> dict[str, object]:
    return {
        "id": f"bench-{n:06d}",
        "from": "Bench <bench@example.com>",
        "to": [f"rcpt{n}@example.com"],
        "subject": f"Benchmark message {n}",
        "body": "x" * 1500,
    }


async def add_sink_tenant(proxy: MailProxy, port: int) -> None:
    """Tenant ``bench`` whose default account sends to the sink on ``port``."""
    await proxy.put_tenant({"id": "bench"})
    await proxy.put_account(
        {"id": "sink", "tenant_id": "bench", "host": "127.0.0.1", "port": port,
         "use_tls": False, "is_default": True}
    )  # fmt: skip


async def deliver_all(proxy: MailProxy, n: int) -> float:
    """Submit ``n`` messages in batches; wait until all are sent; when the last batch
    was committed (``perf_counter``)."""
    for start in range(0, n, BATCH):
        batch = [message(i) for i in range(start, min(n, start + BATCH))]
        await proxy.submit(batch, tenant_id="bench")
    enqueued = time.perf_counter()
    while (await proxy.counts("bench")).get(Status.SENT, 0) < n:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # polling the store costs CPU: keep it rare
    return enqueued


async def run_proxy(
    n: int, port: int, workdir: Path, synchronous: Literal["full", "normal"] = "full"
) -> dict[str, float]:
    store = SqliteStore(workdir / f"bench-{n}.db", synchronous=synchronous)
    proxy = MailProxy(
        store=store,
        transports={"smtp": SmtpTransport(egress_allow=LOOPBACK)},
    )
    async with proxy:
        await add_sink_tenant(proxy, port)
        cpu0, t0 = cpu_s(), time.perf_counter()
        t_enqueued = await deliver_all(proxy, n)
        t1, cpu1 = time.perf_counter(), cpu_s()
    return {
        "enqueue_msg_s": n / (t_enqueued - t0),
        "delivered_msg_s": n / (t1 - t0),
        "cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / n,
    }


async def run_baseline(n: int, port: int) -> dict[str, float]:
    from email.message import EmailMessage

    payloads = []
    for i in range(n):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "bench@example.com", f"rcpt{i}@example.com", "b"
        msg.set_content("x" * 1500)
        payloads.append(msg.as_bytes())
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)

    async def worker() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench.test"
        )
        await client.connect()
        while not queue.empty():
            content = queue.get_nowait()
            await client.sendmail("bench@example.com", ["rcpt@example.com"], content)
        await client.quit()

    cpu0, t0 = cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    t1, cpu1 = time.perf_counter(), cpu_s()
    return {"baseline_msg_s": n / (t1 - t0), "baseline_cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full")
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n in args.n:
                proxy = asyncio.run(run_proxy(n, port, Path(tmp), args.synchronous))
                baseline = asyncio.run(run_baseline(n, port))
                ratio = proxy["delivered_msg_s"] / baseline["baseline_msg_s"]
                row = {"n": n, **proxy, **baseline, "ratio_to_baseline": ratio}
                print(
                    json.dumps(
                        {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
                    )
                )
    finally:
        sink.terminate()
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
