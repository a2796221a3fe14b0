"""Requests generated from our own OpenAPI schema by schemathesis, every phase (the
schema's examples, boundary coverage, random fuzzing, and stateful sequences that feed
one answer's ids into the next request) against the real ``mail-proxy serve`` process:
whatever a client sends, never a 5xx.

CI runs a modest number of examples per operation; more, e.g.::

    GMP_TEST_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/system/test_openapi_fuzz.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.conftest import TOKEN, start_server

pytestmark = pytest.mark.system

EXAMPLES = int(os.environ.get("GMP_TEST_FUZZ_EXAMPLES", "15"))


def test_no_generated_request_makes_the_server_fail(tmp_path: Path):
    for url, _process in start_server(tmp_path):
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{url}/schema/openapi.json",
             "--header", f"X-API-Token: {TOKEN}", "--checks", "not_a_server_error",
             "--phases", "examples,coverage,fuzzing,stateful",
             "--max-examples", str(EXAMPLES), "--seed", "20261127", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
        summary = run.stdout[-3000:]
        assert run.returncode == 0, summary
        counted = re.search(r"(\d+) generated, (\d+) passed", summary)
        assert counted is not None, summary
        selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", summary)
        assert selected is not None, summary
        every, tested = int(selected.group(2)), int(selected.group(3))
        assert int(selected.group(1)) == tested == every >= 23, summary
        assert int(counted.group(1)) == int(counted.group(2)) >= 10 * tested, summary
        for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
            assert f"✅ {phase}" in summary, summary
