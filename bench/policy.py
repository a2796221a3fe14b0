"""Queue-policy overhead benchmark (not a test).

Delivers N messages through the library (SQLite file, synchronous=FULL) to an aiosmtpd
sink in another process, three ways in one run, and prints CPU ms per message of this
process for each:

- ``plain``: one tenant, one account, no rate limits (the baseline);
- ``two_tenants``: the same N split over two tenants with an account each (fair claims
  across tenants);
- ``limited``: two tenants, with account and tenant limits on every window, high enough
  never to defer (every send reserves slots in six windows).

    python bench/policy.py --n 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from embedded import cpu_s, free_port, message, start_sink
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.model import Status
from mailproxy.service import MailProxy

HIGH = 10_000_000
BATCH = 100


async def run(variant: str, n: int, port: int, workdir: Path) -> dict[str, float]:
    store = SqliteStore(workdir / f"{variant}-{n}.db")
    proxy = MailProxy(store=store, config=store, outbox=store, transports={"smtp": SmtpTransport()})
    tenants = ["t1"] if variant == "plain" else ["t1", "t2"]
    limits = variant == "limited"
    async with proxy:
        for tenant in tenants:
            await proxy.put_tenant(
                {
                    "id": tenant,
                    "rate_limits": {"per_minute": HIGH, "per_hour": HIGH, "per_day": HIGH},
                }
                if limits
                else {"id": tenant}
            )
            account: dict[str, object] = {
                "id": "sink", "tenant_id": tenant, "host": "127.0.0.1", "port": port,
                "use_tls": False, "is_default": True,
            }  # fmt: skip
            if limits:
                account |= {"limit_per_minute": HIGH, "limit_per_hour": HIGH, "limit_per_day": HIGH}
            await proxy.put_account(account)
        cpu0, t0 = cpu_s(), time.perf_counter()
        for start in range(0, n, BATCH):
            for tenant in tenants:
                share = range(start, min(n, start + BATCH))[tenants.index(tenant) :: len(tenants)]
                await proxy.submit([message(i) for i in share], tenant_id=tenant)
        # Counting scans the table: poll twice a second so the watching costs little.
        while sum([(await proxy.counts(t)).get(Status.SENT, 0) for t in tenants]) < n:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        t1, cpu1 = time.perf_counter(), cpu_s()
    return {"delivered_msg_s": n / (t1 - t0), "cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = {
                v: asyncio.run(run(v, args.n, port, Path(tmp)))
                for v in ("plain", "two_tenants", "limited")
            }
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    base = rows["plain"]["cpu_ms_per_msg"]
    for variant, row in rows.items():
        ratio = row["cpu_ms_per_msg"] / base
        print(
            json.dumps(
                {
                    "variant": variant,
                    "n": args.n,
                    **{k: round(v, 3) for k, v in row.items()},
                    "cpu_ratio_to_plain": round(ratio, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
