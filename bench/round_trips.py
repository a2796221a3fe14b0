"""Store round trips per message (not a test): N messages submitted through the library in
batches of 100, delivered by a scripted transport and reported to a recording sender, with
every store call counted by a wrapper around the store. ``driven``: the deterministic
drivers (``run_until_idle``, ``report_once``), the floor; ``running``: the dispatcher and
report loops as ``serve`` runs them, batches arriving 10 ms apart. Prints one JSON line
per mode and tenant count: calls per message in all and by method.

    python bench/round_trips.py [--n 1000] [--tenants 1 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.service import MailProxy
from mailproxy.testing import RecordingReportSender, ScriptedTransport


class Counting:
    """The store, with every awaited method call counted by name."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value) or name.startswith("_"):
            return value

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await value(*args, **kwargs)

        return counted


async def run(n: int, tenants: int, folder: Path, running: bool) -> dict[str, Any]:
    store = Counting(SqliteStore(folder / f"trips-{tenants}-{running}.db"))
    reporter = RecordingReportSender()
    proxy = MailProxy(
        store=store, config=store, outbox=store, access=store,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--tenants", type=int, nargs="+", default=[1, 10])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for running in (False, True):
            for tenants in args.tenants:
                print(json.dumps(asyncio.run(run(args.n, tenants, Path(folder), running))))


if __name__ == "__main__":
    main()
