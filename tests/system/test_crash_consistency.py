"""Crash consistency: ``mail-proxy serve`` on SQLite is SIGKILLed at random moments while
clients enqueue over HTTP, and restarted on the same database; it delivers to an
aiosmtpd sink and reports to an HTTP receiver that both outlive it. After the last
restart the queue drains, and tests/history_check.py compares what the clients were
told, what the sink accepted, what the receiver got and what the service recorded.

CI size: 2,000 messages, 5 kills. Full size, e.g.::

    GMP_TEST_CRASH_MESSAGES=10000 GMP_TEST_CRASH_KILLS=20 \\
        .venv/bin/python -m pytest tests/system/test_crash_consistency.py

``GMP_TEST_CRASH_SEED`` replays a run's kill schedule (each run prints its seed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailproxy.adapters.sqlite import SqliteStore
from tests.history_check import Delivery, ReportEntry, check
from tests.report_receiver import Receiver, running_receiver
from tests.smtp_sink import SinkHandler
from tests.system.conftest import TOKEN, free_port, start_server

pytestmark = pytest.mark.system

MESSAGES = int(os.environ.get("GMP_TEST_CRASH_MESSAGES", "2000"))
KILLS = int(os.environ.get("GMP_TEST_CRASH_KILLS", "5"))
BATCH, CLIENTS = 50, 8
#: Each client waits this long after an accepted batch, so that enqueueing spans about
#: half of the kills (one every ~1.6 s with the restart) instead of ending before the first.
PACE_S = KILLS * 0.8 / max(1, MESSAGES // (BATCH * CLIENTS))
ADMIN = {"X-API-Token": TOKEN}
#: Rejections that mean "you already gave me this one" to a client re-sending a batch.
ALREADY_HELD = {"already sent", "in flight"}
MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


class Service:
    """One ``mail-proxy serve`` on a fixed port and database, started again after a kill."""

    def __init__(self, folder: Path, port: int, env: dict[str, str]) -> None:
        self.folder, self.port, self.env = folder, port, env
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "server.log"

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from mailproxy.entrypoints.cli import main; main()",
                 "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=60)


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """The services a test starts, killed at its end even when it fails half-way (a
    server left running would outlive the test and its deleted folder)."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.process is not None and service.process.poll() is None:
            service.kill()


class Clients:
    """CLIENTS threads sending the batches; each batch is re-sent (same message ids, same
    ``Idempotency-Key``) after a refused connection, a reset, a 5xx or a 409 (the first
    try is still running), until the service answers it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.batches = [
            [f"c{n}" for n in range(start, min(MESSAGES, start + BATCH))]
            for start in range(0, MESSAGES, BATCH)
        ]
        self.attempted: set[str] = set()
        self.acked: set[str] = set()
        self.indeterminate = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def run(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        return threads

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, headers=ADMIN, timeout=10) as client:
            while True:
                with self._lock:
                    if not self.batches:
                        return
                    ids = self.batches.pop()
                    self.attempted.update(ids)
                self._send(client, ids)
                time.sleep(PACE_S)

    def _send(self, client: httpx.Client, ids: list[str]) -> None:
        body = {"messages": [message(i) for i in ids]}
        key = {"Idempotency-Key": f"batch-{ids[0]}"}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                answer = client.post("/commands/add-messages", json=body, headers=key)
            except httpx.TransportError:
                with self._lock:
                    self.indeterminate += 1
                time.sleep(0.1)
                continue
            if answer.status_code >= 500 or answer.status_code == 409:  # 409: still running
                time.sleep(0.1)
                continue
            reply = answer.json()
            refused = {r["id"]: r["reason"] for r in reply.get("rejected", [])}
            with self._lock:
                if answer.status_code != 200 or set(refused.values()) - ALREADY_HELD:
                    self.errors.append(f"{answer.status_code} {answer.text[:300]}")
                self.acked.update(i for i in ids if refused.get(i, "in flight") in ALREADY_HELD)
            return
        with self._lock:
            self.errors.append(f"batch {ids[0]}.. never answered")


def message(message_id: str) -> dict[str, object]:
    n = message_id[1:]
    return {"id": message_id, "tenant_id": "acme", "from": "app@example.com",
            "to": [f"r{n}@example.com"], "subject": f"Crash run {n}",
            "body": f"message {n}\n" + "x" * 2000}  # fmt: skip


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def sink_deliveries(handler: SinkHandler) -> list[Delivery]:
    deliveries = []
    for received in list(handler.received):
        found = MESSAGE_ID.search(received.content)
        for rcpt in received.rcpt_tos:
            number = rcpt.split("@")[0][1:]
            deliveries.append(Delivery(f"c{number}", found.group(1).decode() if found else ""))
    return deliveries


def report_entries(receiver: Receiver) -> list[ReportEntry]:
    return [
        ReportEntry(entry["id"], entry["event"], entry["event_id"])
        for call in list(receiver.calls)
        for entry in call.entries
    ]


def test_random_kill_9_loses_nothing_and_duplicates_only_what_it_called_unknown(
    tmp_path: Path, sink: tuple[SinkHandler, int], receiver: Receiver, services: list[Service]
) -> None:
    handler, smtp_port = sink
    handler.reply_delay_s = 0.005  # a message accepted, its 250 not yet read: the unknown window
    seed = int(os.environ.get("GMP_TEST_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    database = tmp_path / "crash.db"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "GMP_DB_PATH": str(database),
        "GMP_API_TOKEN": TOKEN,
        "GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8",
        "GMP_RETRY_BASE_DELAY_S": "0.5",
        "GMP_RETRY_MAX_DELAY_S": "1",
        "GMP_REPORTING_RETRY_MAX_DELAY_S": "1",
    }
    service = Service(tmp_path, free_port(), env)
    services.append(service)
    service.start()
    with httpx.Client(base_url=service.url, headers=ADMIN, timeout=10) as admin:
        admin.post("/tenant", json={"id": "acme", "client_base_url": receiver.url})
        admin.post("/account", json={"id": "main", "tenant_id": "acme", "host": "127.0.0.1",
                                     "port": smtp_port, "use_tls": False,
                                     "is_default": True}).raise_for_status()  # fmt: skip
    clients = Clients(service.url)
    threads = clients.run()
    kill_times = []
    for _ in range(KILLS):
        time.sleep(rng.uniform(0.3, 1.5))
        service.kill()
        kill_times.append(len(handler.received))
        time.sleep(rng.uniform(0.0, 0.4))
        service.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not clients.errors, clients.errors[:5]
    assert clients.acked == clients.attempted, "a batch was never accepted"

    def drained() -> bool:
        reported = {e.id for e in report_entries(receiver) if e.event == "sent"}
        return clients.acked <= reported

    deadline = time.monotonic() + 180
    while not drained() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert service.stop() == 0

    with sqlite3.connect(database) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM messages").fetchone()
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM messages GROUP BY status"))
        written_events = {row[0] for row in db.execute("SELECT event_id FROM reports")}
        unacknowledged = db.execute(
            "SELECT COUNT(*) FROM reports WHERE acked_ts IS NULL"
        ).fetchone()[0]
        unknown = dict(
            db.execute(
                "SELECT m.id, COUNT(*) FROM history h JOIN messages m ON m.pk = h.message_pk "
                "WHERE h.event = 'unknown' GROUP BY m.id"
            )
        )
    verdict = check(
        attempted=clients.attempted,
        acked=clients.acked,
        deliveries=sink_deliveries(handler),
        reports=report_entries(receiver),
        unknown_attempts=unknown,
    )
    figures = {"seed": seed, "messages": MESSAGES, "kills": KILLS,
               "sink_count_at_each_kill": kill_times,
               "indeterminate_requests": clients.indeterminate, **verdict.summary()}  # fmt: skip
    artifacts = Path(os.environ.get("GMP_TEST_ARTIFACTS", "build/test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "crash-run.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    assert integrity == "ok"
    assert rows == distinct == MESSAGES
    assert statuses == {"sent": MESSAGES}
    assert verdict.ok, figures
    # Every report entry the service wrote reached the receiver, and it knows it did.
    assert written_events <= {e.event_id for e in report_entries(receiver)}
    assert unacknowledged == 0


def test_a_key_whose_request_died_with_the_process_can_be_retried_at_once(tmp_path: Path) -> None:
    database = tmp_path / "mailproxy.db"
    env = {"GMP_DB_PATH": str(database), "GMP_DELIVERY_WORKER_ID": "w1"}
    serving = contextlib.contextmanager(start_server)
    with serving(tmp_path, env) as (url, _):
        httpx.post(f"{url}/tenant", json={"id": "acme"}, headers=ADMIN).raise_for_status()
        httpx.post(f"{url}/account", headers=ADMIN, json={"id": "main", "tenant_id": "acme",
                   "kind": "capture", "is_default": True}).raise_for_status()  # fmt: skip

    async def requests_that_died() -> None:  # as a killed process leaves them
        store = SqliteStore(database)
        await store.open()
        for key, owner in (("mine", "w1"), ("theirs", "w2")):
            start = await store.begin_idempotent(
                "admin", key, "fp", time.time(), ttl_s=86400, stale_s=300, owner=owner
            )
            assert start.state == "new"
        await store.close()

    asyncio.run(requests_that_died())
    with serving(tmp_path, env) as (url, _):
        for key, expected in (("mine", 200), ("theirs", 409)):
            answer = httpx.post(
                f"{url}/commands/add-messages",
                headers={**ADMIN, "Idempotency-Key": key},
                json={"messages": [message(f"c-{key}")]},
            )
            assert answer.status_code == expected, answer.text
