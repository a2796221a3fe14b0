"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest

from mailproxy.entrypoints.cli import app
from mailproxy.entrypoints.instances import Instance


@pytest.fixture
def home(tmp_path, monkeypatch):
    """GMP_HOME with a stopped instance ``box`` that has a tenant ``acme``."""
    home = tmp_path / "home"
    monkeypatch.setenv("GMP_HOME", str(home))
    Instance(home, "box").create("127.0.0.1", 1)
    assert app(["box", "tenants", "add", "acme"], result_action="return_value") == 0
    return home
