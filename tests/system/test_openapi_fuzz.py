"""Property-based requests generated from our own OpenAPI schema (schemathesis) against
the real ``mail-proxy serve`` process: whatever a client sends, never a 5xx."""

from __future__ import annotations

from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

#: Examples per operation: enough to reach every field in CI, small enough to stay quick.
EXAMPLES = 12


def test_no_generated_request_makes_the_server_fail(tmp_path: Path):
    checked = []
    for url, _process in start_server(tmp_path):
        schema = schemathesis.openapi.from_url(f"{url}/schema/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()

            @hypothesis.given(case=operation.as_strategy())
            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            def call(case: schemathesis.Case) -> None:
                case.call_and_validate(headers={"X-API-Token": TOKEN}, checks=[not_a_server_error])

            call()
            checked.append(operation.label)
    assert len(checked) >= 23, checked
