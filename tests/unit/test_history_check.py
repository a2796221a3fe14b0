"""The crash-run checker flags each kind of broken promise, and passes a clean run."""

from __future__ import annotations

from tests.history_check import Delivery, ReportEntry, check


def clean_run(**overrides):
    records = {
        "attempted": ["a", "b", "c"],
        "acked": ["a", "b", "c"],
        "deliveries": [Delivery("a", "<1@x>"), Delivery("b", "<2@x>"), Delivery("c", "<3@x>")],
        "reports": [ReportEntry(i, "sent", f"e-{i}") for i in "abc"],
        "unknown_attempts": {},
    }
    return check(**(records | overrides))


def test_a_clean_run_passes():
    verdict = clean_run()
    assert verdict.ok
    assert verdict.summary()["delivered_unique"] == 3


def test_an_acknowledged_message_missing_at_the_sink_is_lost_unless_it_failed():
    deliveries = [Delivery("a", "<1@x>"), Delivery("b", "<2@x>")]
    reports = [ReportEntry("a", "sent", "e-a"), ReportEntry("b", "sent", "e-b")]
    assert clean_run(deliveries=deliveries, reports=reports).lost == ["c"]
    failed = clean_run(
        deliveries=deliveries, reports=[*reports, ReportEntry("c", "error", "e-c")], failed=["c"]
    )
    assert failed.ok


def test_a_message_nobody_sent_is_unexpected():
    verdict = clean_run(deliveries=[*clean_run_deliveries(), Delivery("zz", "<9@x>")])
    assert verdict.unexpected == ["zz"]
    assert not verdict.ok


def test_a_duplicate_needs_an_unknown_attempt_and_the_same_message_id():
    twice = [*clean_run_deliveries(), Delivery("a", "<1@x>")]
    assert clean_run(deliveries=twice).unexplained_duplicates == ["a"]
    assert clean_run(deliveries=twice, unknown_attempts={"a": 1}).ok
    renamed = [*clean_run_deliveries(), Delivery("a", "<other@x>")]
    assert clean_run(deliveries=renamed, unknown_attempts={"a": 1}).unexplained_duplicates == ["a"]


def test_reports_must_carry_one_final_outcome_per_message():
    missing = clean_run(reports=[ReportEntry("a", "sent", "e-a"), ReportEntry("b", "sent", "e-b")])
    assert missing.reports_missing == ["c"]
    both = [ReportEntry(i, "sent", f"e-{i}") for i in "abc"] + [ReportEntry("a", "error", "x")]
    assert clean_run(reports=both).conflicting == ["a"]
    repeated = [ReportEntry(i, "sent", f"e-{i}") for i in "abc"] + [ReportEntry("a", "sent", "e-a")]
    verdict = clean_run(reports=repeated)
    assert verdict.ok
    assert verdict.repeated_report_entries == 1


def clean_run_deliveries() -> list[Delivery]:
    return [Delivery("a", "<1@x>"), Delivery("b", "<2@x>"), Delivery("c", "<3@x>")]
