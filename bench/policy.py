"""Queue-policy overhead benchmark (not a test).

Delivers N messages through the library (SQLite file, synchronous=FULL) to an aiosmtpd
sink in another process, three ways in one run, and prints CPU ms per message of this
process for each:

- ``plain``: one tenant with two accounts, no rate limits (the baseline: nothing to
  be fair about, nothing to count);
- ``two_tenants``: the same two accounts, one in each of two tenants, so every claim
  goes round-robin over the tenants (the cost of fairness);
- ``limited``: as ``two_tenants``, plus account and tenant limits on every window, high
  enough never to defer, so every send reserves a slot in six windows (the cost of
  fairness and rate limiting together).

Both accounts point at the same sink and get half of the messages each, so the variants
differ only in the policy work.

    python bench/policy.py --n 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from embedded import cpu_s, free_port, message, start_sink
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.model import Status
from mailproxy.service import MailProxy

#: The sink is on loopback, which the egress rule refuses unless it is allowed.
LOOPBACK = parse_networks("127.0.0.0/8")

HIGH = 10_000_000
BATCH = 100


async def run(variant: str, n: int, port: int, workdir: Path) -> dict[str, float]:
    store = SqliteStore(workdir / f"{variant}-{n}.db")
    proxy = MailProxy(
        store=store,
        transports={"smtp": SmtpTransport(egress_allow=LOOPBACK)},
    )
    # (tenant, account) pairs; the messages alternate between them.
    pairs = [("t1", "a1"), ("t1", "a2")] if variant == "plain" else [("t1", "a1"), ("t2", "a2")]
    tenants = sorted({tenant for tenant, _ in pairs})
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
        for tenant, account_id in pairs:
            account: dict[str, object] = {
                "id": account_id, "tenant_id": tenant, "host": "127.0.0.1", "port": port,
                "use_tls": False,
            }  # fmt: skip
            if limits:
                account |= {"limit_per_minute": HIGH, "limit_per_hour": HIGH, "limit_per_day": HIGH}
            await proxy.put_account(account)
        cpu0, t0 = cpu_s(), time.perf_counter()
        for start in range(0, n, BATCH):
            for k, (tenant, account_id) in enumerate(pairs):
                share = range(start + k, min(n, start + BATCH), len(pairs))
                batch = [message(i) | {"account_id": account_id} for i in share]
                await proxy.submit(batch, tenant_id=tenant)
        # Counting scans the table: poll twice a second so the watching costs little.
        while sum([(await proxy.counts(t)).get(Status.SENT, 0) for t in tenants]) < n:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        t1, cpu1 = time.perf_counter(), cpu_s()
    return {"delivered_msg_s": n / (t1 - t0), "cpu_ms_per_msg": (cpu1 - cpu0) * 1000 / n}


VARIANTS = ("plain", "two_tenants", "limited")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the variants in turn this many times; "
        "each figure is the median over the rounds"
    )  # fmt: skip
    args = parser.parse_args()
    port = free_port()
    sink = start_sink(port)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):
                for variant in VARIANTS:
                    workdir = Path(tmp) / f"{variant}-{round_}"
                    workdir.mkdir()
                    runs[variant].append(asyncio.run(run(variant, args.n, port, workdir)))
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    rows = {v: {k: statistics.median(r[k] for r in runs[v]) for k in runs[v][0]} for v in VARIANTS}
    base = rows["plain"]["cpu_ms_per_msg"]
    for variant, row in rows.items():
        ratio = row["cpu_ms_per_msg"] / base
        print(
            json.dumps(
                {
                    "variant": variant,
                    "n": args.n,
                    "rounds": args.rounds,
                    **{k: round(v, 3) for k, v in row.items()},
                    "cpu_ratio_to_plain": round(ratio, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
