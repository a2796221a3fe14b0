"""The API docs page (``/schema``, Swagger UI) in a real headless browser that can reach
nothing but this machine, as on a host without internet: the operations of the API are
listed, every file the page loads comes from the server itself, and the page's own
Content-Security-Policy refuses nothing it needs. A screenshot is kept as
``build/test-artifacts/api-docs.png`` (or in ``GMP_TEST_ARTIFACTS``)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.browser import chromium
from tests.system.conftest import start_server

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    offline = (
        # No name resolves, and everything but loopback (which Chromium never sends
        # through a proxy) goes to a proxy on a closed loopback port.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    logs = {"goog:loggingPrefs": {"browser": "ALL"}}
    with chromium("API docs", profile, *offline, capabilities=logs) as driver:
        yield driver


def test_the_api_docs_page_lists_the_operations_without_internet(offline_browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser = offline_browser
    servers = start_server(tmp_path)
    url, _ = next(servers)
    try:
        browser.get(f"{url}/schema")
        deadline = time.monotonic() + 20
        paths: list[str] = []
        while time.monotonic() < deadline and "/commands/add-messages" not in paths:
            paths = [
                element.text
                for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
            ]
            time.sleep(0.2)
        assert {"/commands/add-messages", "/messages", "/tenant", "/health"} <= set(paths)
        assert "mailproxy" in browser.find_element(By.CSS_SELECTOR, ".info .title").text
        loaded = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert loaded
        assert all(name.startswith((f"{url}/", "data:")) for name in loaded), loaded
        refused = [entry["message"] for entry in browser.get_log("browser")
                   if entry["level"] == "SEVERE"]  # fmt: skip
        assert refused == []
        artifacts = Path(os.environ.get("GMP_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(artifacts / "api-docs.png"))
    finally:
        servers.close()
