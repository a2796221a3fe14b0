"""Delivery-report throughput benchmark (not a test).

A receiver runs in another process on 127.0.0.1 and answers 200 to every report call.
This process writes "sent" state changes into the outbox at a steady rate (default 1,000 a
second, as the dispatcher does after each SMTP 250: one claim and one completion per
message, through the store), while the service's report loop posts them with the HTTP
sender. Prints the rate reached, the calls made, and the latency from each state change to
its acknowledgement by the receiver (p50, p99, max), read from the outbox itself.

    python bench/reports.py --n 10000 --rate 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from embedded import free_port, message, start_listener
from mailproxy.adapters.capture import CaptureTransport
from mailproxy.adapters.http_reports import HttpReportSender
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.lifecycle import decide
from mailproxy.domain.outcome import Delivered
from mailproxy.service import MailProxy

TICK_S = 0.01


def serve(port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "11")
            self.end_headers()
            self.wfile.write(b'{"ok":true}')

        def log_message(self, format: str, *args: Any) -> None:
            return

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


async def run(n: int, rate: float, port: int, db: Path) -> dict[str, float]:
    store = SqliteStore(db)
    proxy = MailProxy(
        store=store,
        transports={"capture": CaptureTransport(db.parent)},
        reporter=HttpReportSender(egress_allow=parse_networks("127.0.0.0/8")),
        run_dispatcher=False, run_reporter=True,
    )  # fmt: skip
    async with proxy:
        await proxy.put_tenant({"id": "bench", "client_base_url": f"http://127.0.0.1:{port}"})
        await proxy.put_account(
            {"id": "a", "tenant_id": "bench", "kind": "capture", "max_connections": n}
        )
        for start in range(0, n, 1000):
            batch = [message(i) | {"account_id": "a"} for i in range(start, min(n, start + 1000))]
            await proxy.submit(batch, tenant_id="bench")
        per_tick = max(1, round(rate * TICK_S))
        started = time.perf_counter()
        produced = 0
        while produced < n:
            # What the dispatcher does after each SMTP 250: the "sent" transition with its
            # report event, committed, then a wake-up of the report loop.
            claims = await store.claim_due(now=time.time(), limit=per_tick, owner="b", lease_s=60)
            now = time.time()
            await asyncio.gather(
                *(
                    store.complete(
                        claim.lease,
                        decide(
                            claim.message,
                            Delivered(250),
                            now=now,
                            policy=proxy.delivery.retry_policy,
                            unknown_policy="at_least_once",
                            jitter_sample=0.0,
                            event_id=f"e{claim.lease.pk}",
                        ),
                        now,
                    )
                    for claim in claims
                )
            )
            produced += len(claims)
            proxy.run_now("bench")
            await asyncio.sleep(max(0.0, started + produced / rate - time.perf_counter()))
        produce_s = time.perf_counter() - started
        while (await proxy.outbox.report_backlog("bench")).count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        calls = {t.id: s for t, s, _, _ in await proxy.sync_status()}["bench"].calls
    with sqlite3.connect(db) as conn:
        lags = sorted(r[0] for r in conn.execute("SELECT acked_ts - created_ts FROM reports"))
    return {
        "n": n, "rate_asked": rate, "rate_produced": round(n / produce_s, 1), "calls": calls,
        "ack_p50_ms": round(lags[len(lags) // 2] * 1000, 1),
        "ack_p99_ms": round(lags[int(len(lags) * 0.99) - 1] * 1000, 1),
        "ack_max_ms": round(lags[-1] * 1000, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    receiver = start_listener([sys.executable, __file__, "--serve", str(port)], port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(asyncio.run(run(args.n, args.rate, port, Path(tmp) / "r.db"))))
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


if __name__ == "__main__":
    main()
