"""Store round trips per message (not a test): N messages submitted through the library in
batches of 100, delivered by a scripted transport and reported to a recording sender, with
every store call counted by a wrapper around the store. ``driven``: the deterministic
drivers (``run_until_idle``, ``report_once``), the floor; ``running``: the dispatcher and
report loops as ``serve`` runs them, batches arriving 10 ms apart. Prints one JSON line
per mode and tenant count: calls per message in all and by method.

``--http``: instead, the store calls of one ``POST /commands/add-messages`` through the
real app (one message per request), by caller (a tenant key; the admin naming the tenant)
and with or without an ``Idempotency-Key``: ``warm``, requests close together (the
service's configuration cache holds the tenant; the first request is left out), and
``spaced``, each request more than ``CONFIG_CACHE_S`` after the last (the service's
monotonic clock jumps between requests); then the store calls of one ``GET /metrics``
scrape with 1 and with 10 tenants.

    python bench/round_trips.py [--n 1000] [--tenants 1 10]
    python bench/round_trips.py --http [--n 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from litestar.testing import AsyncTestClient

from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.config import load_settings
from mailproxy.entrypoints.http import create_app
from mailproxy.service import CONFIG_CACHE_S, MailProxy
from mailproxy.testing import CountingStore, RecordingReportSender, ScriptedTransport


async def run(n: int, tenants: int, folder: Path, running: bool) -> dict[str, Any]:
    store = CountingStore(SqliteStore(folder / f"trips-{tenants}-{running}.db"))
    reporter = RecordingReportSender()
    proxy = MailProxy(
        store=store,
        transports={"smtp": ScriptedTransport()}, reporter=reporter,
        run_dispatcher=running,
    )  # fmt: skip
    async with proxy:
        for t in range(tenants):
            await proxy.put_tenant({"id": f"t{t}", "client_base_url": "https://app.example"})
            await proxy.put_account(
                {"id": "a", "tenant_id": f"t{t}", "host": "smtp.example.com", "port": 587,
                 "is_default": True}
            )  # fmt: skip
        store.calls.clear()
        for start in range(0, n, 100):
            batch = [
                {"id": f"m{k}", "from": "app@example.com", "to": ["r@example.com"],
                 "subject": "s", "tenant_id": f"t{k % tenants}"}
                for k in range(start, min(n, start + 100))
            ]  # fmt: skip
            await proxy.submit(batch)
            if running:
                await asyncio.sleep(0.01)
        if running:
            while sum(len(c.events) for c in reporter.calls) < n:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.05)
        else:
            await proxy.run_until_idle()
            while await proxy.report_once():
                pass
    total = sum(store.calls.values())
    return {
        "mode": "running" if running else "driven",
        "n": n,
        "tenants": tenants,
        "store_calls_per_message": round(total / n, 2),
        "by_method": {k: round(v / n, 3) for k, v in store.calls.most_common()},
        "report_calls": len(reporter.calls),
    }


ADMIN_TOKEN = "round-trips-admin-token-0123456789abcdef"


async def run_http(n: int, folder: Path, spaced: bool) -> list[dict[str, Any]]:
    store = CountingStore(SqliteStore(folder / f"trips-http-{spaced}.db"))
    #: The service's monotonic clock; moved past the cache lifetime before each request.
    elapsed = [0.0]
    proxy = MailProxy(
        store=store,
        transports={"smtp": ScriptedTransport()}, run_dispatcher=False,
        monotonic=(lambda: elapsed[0]) if spaced else time.monotonic,
    )  # fmt: skip
    settings = load_settings(environ={"GMP_API_TOKEN": ADMIN_TOKEN})
    results = []
    async with proxy, AsyncTestClient(create_app(proxy, settings, own_proxy=False)) as client:
        created = await proxy.create_tenant({"id": "t0", "client_base_url": "https://app.example"})
        await proxy.put_account(
            {"id": "a", "tenant_id": "t0", "host": "smtp.example.com", "port": 587,
             "is_default": True}
        )  # fmt: skip
        callers = {
            "tenant key": ({"X-API-Token": created.api_key}, {}),
            "admin": ({"X-API-Token": ADMIN_TOKEN}, {"tenant_id": "t0"}),
        }
        for caller, (headers, params) in callers.items():
            for idempotent in (False, True):
                label = f"{caller}{' idempotent' if idempotent else ''}"
                for k in range(n + 1):
                    if k == 1:
                        store.calls.clear()
                    elapsed[0] += CONFIG_CACHE_S + 1
                    extra = {"Idempotency-Key": f"{label}-{k}"} if idempotent else {}
                    message = {"id": f"{label}-{k}", "from": "app@example.com",
                               "to": ["r@example.com"], "subject": "s"}  # fmt: skip
                    answer = await client.post(
                        "/commands/add-messages", json={"messages": [message]},
                        params=params, headers=headers | extra,
                    )  # fmt: skip
                    assert answer.json()["queued"] == 1, answer.text
                total = sum(store.calls.values())
                results.append({
                    "mode": f"http {'spaced' if spaced else 'warm'}", "caller": label,
                    "requests": n,
                    "store_calls_per_request": round(total / n, 2),
                    "by_method": {k: round(v / n, 3) for k, v in store.calls.most_common()},
                })  # fmt: skip
        if not spaced:
            for tenants in (1, 10):
                for t in range(1, tenants):
                    await proxy.put_tenant({"id": f"t{t}"})
                store.calls.clear()
                answer = await client.get("/metrics", headers={"X-API-Token": ADMIN_TOKEN})
                assert answer.status_code == 200, answer.text
                results.append({
                    "mode": "http scrape", "tenants": tenants,
                    "store_calls_per_scrape": sum(store.calls.values()),
                    "by_method": dict(store.calls.most_common()),
                })  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--http", action="store_true", help="count one add-messages request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.http:
            for spaced in (False, True):
                for result in asyncio.run(run_http(args.n, Path(folder), spaced)):
                    print(json.dumps(result))
            return
        for running in (False, True):
            for tenants in args.tenants:
                print(json.dumps(asyncio.run(run(args.n, tenants, Path(folder), running))))


if __name__ == "__main__":
    main()
