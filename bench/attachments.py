"""Cached-attachment cost benchmark (not a test).

Delivers N messages through the library (SQLite file, synchronous=FULL) to an SMTP sink
in another process (``--sink fast``: bench/fast_sink.py, the default; ``--sink aiosmtpd``),
twice in one run: without attachments, and with the same 1 MB
attachment on every message, referenced by URL with an MD5 marker (an HTTP server in
another process serves it; the first message fetches it, the others find it in the
cache). After a warm-up of 10 messages, prints CPU ms per message of this process for
both and the difference: what a cached 1 MB attachment adds in the steady state (MIME
encoding and sending the larger message included).

    python bench/attachments.py --n 300 [--sink aiosmtpd]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from embedded import cpu_s, free_port, message, start_listener, start_sink
from mailproxy.adapters.attachment_cache import TwoTierCache
from mailproxy.adapters.attachment_sources import UrlSource
from mailproxy.adapters.guarded_http import GuardedHttp
from mailproxy.adapters.smtp import SmtpTransport
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.egress import parse_networks
from mailproxy.domain.model import Status
from mailproxy.service import MailProxy

FAST_SINK = Path(__file__).parent / "fast_sink.py"
SIZE = 1_000_000
WARM_UP = 10


async def run(n: int, smtp_port: int, url: str | None, workdir: Path, digest: str) -> float:
    store = SqliteStore(workdir / f"{'att' if url else 'plain'}.db")
    local = parse_networks("127.0.0.0/8")
    proxy = MailProxy(
        store=store,
        transports={"smtp": SmtpTransport(egress_allow=local)},
        attachment_sources=[UrlSource(GuardedHttp(timeout_s=10, egress_allow=local), local, SIZE)],
        attachment_cache=TwoTierCache(),
    )  # fmt: skip
    async with proxy:
        prefixes = [url.rsplit("/", 1)[0] + "/"] if url else []
        await proxy.put_tenant({"id": "bench", "attachment_url_prefixes": prefixes})
        await proxy.put_account(
            {"id": "sink", "tenant_id": "bench", "host": "127.0.0.1", "port": smtp_port,
             "use_tls": False, "is_default": True}
        )  # fmt: skip
        extra: dict[str, object] = {}
        if url:
            name = f"report_{{MD5:{digest}}}.pdf"
            extra = {"attachments": [{"filename": name, "storage_path": url}]}
        # Warm up first (imports, the first fetch into the cache, connections): the
        # figure is the steady cost per message.
        await proxy.submit([message(n + i) | extra for i in range(WARM_UP)], tenant_id="bench")
        while (await proxy.counts("bench")).get(Status.SENT, 0) < WARM_UP:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        cpu0 = cpu_s()
        for start in range(0, n, 100):
            batch = [message(i) | extra for i in range(start, min(n, start + 100))]
            await proxy.submit(batch, tenant_id="bench")
        while (await proxy.counts("bench")).get(Status.SENT, 0) < n + WARM_UP:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        return (cpu_s() - cpu0) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument(
        "--sink", choices=["fast", "aiosmtpd"], default="fast",
        help="fast: bench/fast_sink.py, which keeps up like a production MTA; aiosmtpd: "
        "slower on large messages, so the sender also pays for its backpressure",
    )  # fmt: skip
    args = parser.parse_args()
    smtp_port, http_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "files").mkdir()
        content = os.urandom(SIZE)
        (workdir / "files" / "report.bin").write_bytes(content)
        digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
        sink = (
            start_sink(smtp_port)
            if args.sink == "aiosmtpd"
            else start_listener([sys.executable, str(FAST_SINK), str(smtp_port)], smtp_port)
        )
        server = start_listener(
            [sys.executable, "-m", "http.server", str(http_port), "--bind", "127.0.0.1",
             "--directory", str(workdir / "files")],
            http_port,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{http_port}/report.bin"
            started = time.perf_counter()
            plain = asyncio.run(run(args.n, smtp_port, None, workdir, digest))
            cached = asyncio.run(run(args.n, smtp_port, url, workdir, digest))
        finally:
            for process in (sink, server):
                process.terminate()
                process.wait(timeout=10)
    print(
        json.dumps(
            {
                "n": args.n,
                "sink": args.sink,
                "plain_cpu_ms_per_msg": round(plain, 3),
                "cached_1mb_cpu_ms_per_msg": round(cached, 3),
                "added_ms_per_msg": round(cached - plain, 3),
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
