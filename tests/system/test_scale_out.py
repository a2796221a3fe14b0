"""Three ``mail-proxy serve`` processes on one PostgreSQL database and one aiosmtpd sink:
every message delivered exactly once, rate limits that hold across processes, and a
SIGKILLed process whose leased messages the others deliver."""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.smtp_sink import SinkHandler
from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

ADMIN = {"X-API-Token": TOKEN}


@contextlib.contextmanager
def cluster(
    tmp_path: Path, database: str, size: int, env: Mapping[str, str] | None = None
) -> Iterator[list[tuple[str, object]]]:
    """``size`` processes on ``database``, each with its own worker id and folder."""
    with contextlib.ExitStack() as stack:
        members = []
        for n in range(size):
            folder = tmp_path / f"p{n}"
            folder.mkdir()
            settings = {"GMP_DB_PATH": database, "GMP_DELIVERY_WORKER_ID": f"w{n}", **(env or {})}
            members.append(
                stack.enter_context(contextlib.contextmanager(start_server)(folder, settings))
            )
        yield members


def configure(url: str, smtp_port: int, **account: object) -> None:
    with httpx.Client(base_url=url, headers=ADMIN, timeout=10) as admin:
        admin.post("/tenant", json={"id": "acme"}).raise_for_status()
        main = {"id": "main", "tenant_id": "acme", "host": "127.0.0.1", "port": smtp_port,
                "use_tls": False, "is_default": True, "max_connections": 4, **account}  # fmt: skip
        admin.post("/account", json=main).raise_for_status()


def submit(urls: list[str], count: int, batch: int = 100) -> None:
    """``count`` messages to r0..r<count-1>@example.com, the batches spread over ``urls``."""
    for start in range(0, count, batch):
        messages = [
            {
                "id": f"m{n}",
                "tenant_id": "acme",
                "from": "app@example.com",
                "to": [f"r{n}@example.com"],
                "subject": f"message {n}",
            }
            for n in range(start, min(start + batch, count))
        ]
        url = urls[(start // batch) % len(urls)]
        answer = httpx.post(
            f"{url}/commands/add-messages", json={"messages": messages}, headers=ADMIN, timeout=30
        )
        assert answer.json()["queued"] == len(messages), answer.text


def wait_until(check, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def queue(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/status", headers=ADMIN, timeout=10).json()["queue"]


def sent_by(url: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=ADMIN, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gmp_sent_total"
    )


def received(handler: SinkHandler) -> Counter[str]:
    return Counter(r.rcpt_tos[0] for r in list(handler.received))


def test_three_processes_deliver_two_thousand_messages_exactly_once(tmp_path, postgres_url, sink):
    handler, smtp_port = sink
    with cluster(tmp_path, postgres_url, 3) as members:
        urls = [url for url, _ in members]
        configure(urls[0], smtp_port)
        submit(urls, 2000)
        wait_until(lambda: queue(urls[1]).get("sent", 0) == 2000, "2,000 sent", 180)
        counts = received(handler)
        assert len(counts) == 2000
        assert set(counts.values()) == {1}
        per_process = [sent_by(url) for url in urls]
        assert sum(per_process) == 2000
        assert sum(1 for n in per_process if n > 0) >= 2  # the work was shared


def test_an_account_limit_holds_across_processes_in_every_sliding_window(
    tmp_path, postgres_url, sink
):
    handler, smtp_port = sink
    env = {"GMP_DELIVERY_MINUTE_WINDOW_S": "10"}  # limit_per_minute: 10 per 10 s
    with cluster(tmp_path, postgres_url, 3, env) as members:
        urls = [url for url, _ in members]
        configure(urls[0], smtp_port, limit_per_minute=10)
        submit(urls, 25, batch=5)
        wait_until(lambda: len(handler.received) >= 25, "25 messages at the sink", 60)
    arrivals = sorted(r.at for r in handler.received)
    assert len(arrivals) == 25
    for n, start in enumerate(arrivals):
        in_window = sum(1 for at in arrivals[n:] if at < start + 10)
        assert in_window <= 10, (
            f"{in_window} arrivals in the 10 s from {start}: {[round(a - arrivals[0], 2) for a in arrivals]}"
        )


def test_a_killed_process_leaves_nothing_behind(tmp_path, postgres_url, sink):
    handler, smtp_port = sink
    handler.reply_delay_s = 0.02
    # Short leases, and a retry of an unknown attempt after a second, not a minute.
    env = {"GMP_DELIVERY_LEASE_S": "3", "GMP_RETRY_BASE_DELAY_S": "1"}
    with cluster(tmp_path, postgres_url, 3, env) as members:
        urls = [url for url, _ in members]
        configure(urls[0], smtp_port)
        submit(urls, 600)
        wait_until(lambda: len(handler.received) >= 100, "the first 100 deliveries", 60)
        with psycopg.connect(postgres_url, autocommit=True) as database:

            def leases_of_w1() -> int:
                query = (
                    "SELECT COUNT(*) FROM messages WHERE status = 'sending' AND lease_owner = 'w1'"
                )
                return database.execute(query).fetchone()[0]

            wait_until(lambda: leases_of_w1() > 0, "process w1 to hold leases", 30)
            killed = members[1][1]
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=10)
            held = leases_of_w1()
        assert held > 0
        alive = [urls[0], urls[2]]

        def settled() -> bool:
            counts = queue(alive[0])
            return counts.get("sent", 0) == 600

        wait_until(settled, "all 600 sent by the survivors", 120)
        counts = received(handler)
        assert set(counts) == {f"r{n}@example.com" for n in range(600)}
        twice = [rcpt for rcpt, n in counts.items() if n > 1]
        with httpx.Client(base_url=alive[1], headers=ADMIN, timeout=10) as admin:
            for rcpt in twice:  # only an attempt recorded as unknown may have been repeated
                message_id = "m" + rcpt.split("@")[0][1:]
                record = admin.get(f"/messages/{message_id}", params={"tenant_id": "acme"})
                assert record.json()["message"]["possible_duplicate"], record.text
