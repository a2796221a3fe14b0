"""A bounded soak of ``mail-proxy serve`` on SQLite: a steady stream of messages for a
fixed time while the aiosmtpd sink refuses 10 % of them with a transient 451, and a
receiver takes the reports. Every few seconds the server's RSS, open file descriptors
and WAL size are sampled.

Pass: nothing lost or duplicated (tests/history_check.py), every report received, RSS
after the run within 10 % of RSS after the first minute, the WAL under a fixed bound,
the open descriptors no more than at the start plus a few.

CI: 5 minutes at 150 msg/s (about half of what this machine delivers through the
in-process aiosmtpd sink with the reports). Longer or faster::

    GMP_TEST_SOAK_S=1800 GMP_TEST_SOAK_RATE=200 \\
        .venv/bin/python -m pytest tests/system/test_soak.py
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.history_check import Delivery, ReportEntry, check
from tests.report_receiver import running_receiver
from tests.smtp_sink import SinkHandler
from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

DURATION_S = float(os.environ.get("GMP_TEST_SOAK_S", "300"))
RATE = float(os.environ.get("GMP_TEST_SOAK_RATE", "150"))
ADMIN = {"X-API-Token": TOKEN}
BATCH = 25
SAMPLE_EVERY_S = 5.0
WAL_BOUND_MB = 64


def sample(pid: int, database: Path) -> dict[str, float]:
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    wal = database.with_name(database.name + "-wal")
    return {
        "t": time.monotonic(),
        "rss_mb": rss_kb / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "wal_mb": (wal.stat().st_size if wal.exists() else 0) / 2**20,
    }


def test_a_steady_stream_with_transient_failures_loses_nothing_and_does_not_grow(
    tmp_path: Path, sink: tuple[SinkHandler, int]
) -> None:
    handler, smtp_port = sink
    handler.transient_rate = 0.10
    database = tmp_path / "mailproxy.db"
    env = {"GMP_SECURITY_EGRESS_ALLOW": "127.0.0.0/8", "GMP_RETRY_BASE_DELAY_S": "1",
           "GMP_RETRY_MAX_DELAY_S": "2", "GMP_RETRY_MAX_RETRIES": "50"}  # fmt: skip
    samples: list[dict[str, float]] = []
    sent_ids: list[str] = []
    with running_receiver() as receiver, contextlib.ExitStack() as stack:
        url, process = stack.enter_context(contextlib.contextmanager(start_server)(tmp_path, env))
        client = stack.enter_context(httpx.Client(base_url=url, headers=ADMIN, timeout=30))
        client.post("/tenant", json={"id": "acme", "client_base_url": receiver.url})
        client.post("/account", json={"id": "main", "tenant_id": "acme", "host": "127.0.0.1",
                                      "port": smtp_port, "use_tls": False,
                                      "is_default": True}).raise_for_status()  # fmt: skip
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(SAMPLE_EVERY_S):
                samples.append(sample(process.pid, database))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < DURATION_S:
            ids = [f"s{n + i}" for i in range(BATCH)]
            body = {"messages": [{"id": i, "tenant_id": "acme", "from": "app@example.com",
                                  "to": [f"{i}@example.com"], "subject": f"soak {i}",
                                  "body": "x" * 1500} for i in ids]}  # fmt: skip
            answer = client.post("/commands/add-messages", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.json()["queued"] == BATCH, answer.text
            sent_ids.extend(ids)
            n += BATCH
            time.sleep(max(0.0, n / RATE - (time.monotonic() - started)))  # hold the rate
        loaded = sample(process.pid, database)

        def reported() -> set[str]:
            return {
                e["id"] for c in list(receiver.calls) for e in c.entries if e["event"] == "sent"
            }

        deadline = time.monotonic() + 120
        while len(reported()) < len(sent_ids) and time.monotonic() < deadline:
            time.sleep(0.5)
        stop.set()
        watcher.join(timeout=10)

    deliveries = [
        Delivery(rcpt.split("@")[0], "")
        for received in handler.received
        for rcpt in received.rcpt_tos
    ]
    entries = [
        ReportEntry(e["id"], e["event"], e["event_id"]) for c in receiver.calls for e in c.entries
    ]
    verdict = check(
        attempted=sent_ids, acked=sent_ids, deliveries=deliveries, reports=entries,
        unknown_attempts={},
    )  # fmt: skip
    warm = [s for s in samples if s["t"] - started >= min(60.0, DURATION_S / 5)]
    baseline = warm[0] if warm else samples[0]
    figures = {
        "duration_s": DURATION_S, "rate": RATE, "messages": len(sent_ids),
        "transient_refusals": handler.transient_refusals,
        "rss_mb_after_warm_up": round(baseline["rss_mb"], 1),
        "rss_mb_at_end": round(loaded["rss_mb"], 1),
        "rss_drift": round(loaded["rss_mb"] / baseline["rss_mb"] - 1, 3),
        "wal_mb_max": round(max(s["wal_mb"] for s in samples), 1),
        "fds_first": samples[0]["fds"], "fds_max": max(s["fds"] for s in samples),
        **verdict.summary(),
    }  # fmt: skip
    artifacts = Path(os.environ.get("GMP_TEST_ARTIFACTS", "build/test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / "soak.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))
    assert handler.transient_refusals > 0
    assert verdict.ok, figures
    assert verdict.duplicated == 0, figures
    assert figures["rss_drift"] <= 0.10, figures
    assert figures["wal_mb_max"] <= WAL_BOUND_MB, figures
    assert figures["fds_max"] <= figures["fds_first"] + 8, figures
