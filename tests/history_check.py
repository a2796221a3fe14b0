"""The arithmetic of a crash or fault run, in the manner of Jepsen's total-queue checker:
what the clients were told, what reached the SMTP sink, what reached the report
receiver, and what the service recorded, compared.

Definitions (per message id):

- ``acked``: ids of requests answered 2xx (the service accepted them);
- ``lost``: acked, never at the sink, and not finally failed;
- ``unexpected``: at the sink but never submitted;
- ``duplicated``: copies at the sink beyond the first;
- a duplicate is *explained* when the service recorded at least as many ``unknown``
  attempts for that id as it has extra copies, and every copy carries the same
  Message-ID;
- ``reports_missing``: ids whose final outcome never reached the receiver;
- ``conflicting``: ids reported with two different final outcomes.

A run passes when nothing is lost, unexpected, unexplained, missing or conflicting.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

FINAL_EVENTS = frozenset({"sent", "error"})


@dataclass(frozen=True)
class Delivery:
    """One message as the SMTP sink accepted it."""

    id: str
    message_id: str


@dataclass(frozen=True)
class ReportEntry:
    id: str
    event: str
    event_id: str


@dataclass
class Verdict:
    attempted: int
    acked: int
    delivered_unique: int
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicated: int = 0
    unexplained_duplicates: list[str] = field(default_factory=list)
    unknown_attempts: int = 0
    reports_missing: list[str] = field(default_factory=list)
    conflicting: list[str] = field(default_factory=list)
    repeated_report_entries: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.unexplained_duplicates
            or self.reports_missing
            or self.conflicting
        )

    def summary(self) -> dict[str, object]:
        return {
            "attempted": self.attempted,
            "acked": self.acked,
            "delivered_unique": self.delivered_unique,
            "lost": len(self.lost),
            "unexpected": len(self.unexpected),
            "duplicated": self.duplicated,
            "unexplained_duplicates": len(self.unexplained_duplicates),
            "unknown_attempts": self.unknown_attempts,
            "reports_missing": len(self.reports_missing),
            "conflicting": len(self.conflicting),
            "repeated_report_entries": self.repeated_report_entries,
        }


def check(
    *,
    attempted: Iterable[str],
    acked: Iterable[str],
    deliveries: Iterable[Delivery],
    reports: Iterable[ReportEntry],
    unknown_attempts: Mapping[str, int],
    failed: Iterable[str] = (),
) -> Verdict:
    """Compare the four records of a run (see the module docstring)."""
    attempted_ids, acked_ids, failed_ids = set(attempted), set(acked), set(failed)
    copies: Counter[str] = Counter()
    message_ids: dict[str, set[str]] = defaultdict(set)
    for delivery in deliveries:
        copies[delivery.id] += 1
        message_ids[delivery.id].add(delivery.message_id)
    finals: dict[str, set[str]] = defaultdict(set)
    seen_events: Counter[str] = Counter()
    for entry in reports:
        seen_events[entry.event_id] += 1
        if entry.event in FINAL_EVENTS:
            finals[entry.id].add(entry.event)
    verdict = Verdict(
        attempted=len(attempted_ids), acked=len(acked_ids), delivered_unique=len(copies)
    )
    verdict.lost = sorted(acked_ids - set(copies) - failed_ids)
    verdict.unexpected = sorted(set(copies) - attempted_ids)
    verdict.duplicated = sum(n - 1 for n in copies.values())
    verdict.unexplained_duplicates = sorted(
        message_id
        for message_id, n in copies.items()
        if n > 1
        and (unknown_attempts.get(message_id, 0) < n - 1 or len(message_ids[message_id]) > 1)
    )
    verdict.unknown_attempts = sum(unknown_attempts.values())
    verdict.reports_missing = sorted(
        message_id for message_id in (set(copies) | failed_ids) if not finals.get(message_id)
    )
    verdict.conflicting = sorted(m for m, events in finals.items() if len(events) > 1)
    verdict.repeated_report_entries = sum(n - 1 for n in seen_events.values())
    return verdict
