"""The status page in a real headless browser (Debian's chromium driven through
chromedriver): sign in with the form, read the numbers of a seeded queue off the rendered
page, and keep a screenshot as an artifact.

The browser is installed by this test's setup when it is missing (``apt-get install
chromium chromium-driver``, as root); the test is skipped, saying why, only when that is
impossible. The screenshot goes to ``build/test-artifacts/status-page.png`` or to the
folder in ``GMP_TEST_ARTIFACTS``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.system.conftest import TOKEN, free_port, start_server

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
BROWSER_PACKAGES = ("chromium", "chromium-driver")


def _install_browser() -> str | None:
    """Install Debian's chromium and chromedriver if they are missing; the reason they
    cannot be had, or None when they are there."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return "chromium/chromedriver are missing and there is no apt-get to install them"
    if os.geteuid() != 0:
        return "chromium/chromedriver are missing and installing them needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", *BROWSER_PACKAGES]
    for attempt in ([install], [[apt, "update", "-q"], install]):
        for command in attempt:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode == 0 and shutil.which("chromedriver"):
            return None
    return f"apt-get could not install {' '.join(BROWSER_PACKAGES)}: {done.stderr[-500:]}"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    missing = _install_browser()
    if missing is not None:
        pytest.skip(f"status page browser test skipped: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    # Headless as root, and nothing that reaches out of the machine on its own.
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for(check, what: str, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _seed(url: str, smtp_port: int) -> None:
    """acme: 4 sent, 1 refused for good, 2 scheduled for tomorrow, reports waiting; beta: an account with
    credentials for a server that offers no AUTH, so the breaker pauses it and its
    message waits deferred."""
    with httpx.Client(base_url=url, headers={"X-API-Token": TOKEN}, timeout=10) as admin:
        # acme's report receiver is on ::1, outside the allowed 127.0.0.0/8 (which lets
        # the service reach the SMTP sink): its reports stay waiting, with the reason,
        # and nothing is connected to.
        receiver = f"http://[::1]:{free_port()}/reports"
        admin.post("/tenant", json={"id": "acme", "client_base_url": receiver}).raise_for_status()
        admin.post("/tenant", json={"id": "beta"}).raise_for_status()
        smtp = {"host": "127.0.0.1", "use_tls": False, "is_default": True}
        main = {"id": "main", "tenant_id": "acme", "port": smtp_port}
        admin.post("/account", json=main | smtp).raise_for_status()
        broken = {
            "id": "down",
            "tenant_id": "beta",
            "port": smtp_port,
            "user": "u",
            "password": "p",
        }
        admin.post("/account", json=broken | smtp).raise_for_status()

        def message(message_id: str, to: str = "someone@example.com", **fields: object):
            return {"id": message_id, "from": "app@example.com", "to": [to], "subject": "Hi",
                    **fields}  # fmt: skip

        tomorrow = int(time.time()) + 86_400
        acme = [message(f"ok{n}") for n in range(4)]
        acme += [message("bounced", to="gone@example.com")]
        acme += [message(f"later{n}", deferred_ts=tomorrow) for n in range(2)]
        for tenant_id, batch in (("acme", acme), ("beta", [message("stuck")])):
            batch = [m | {"tenant_id": tenant_id} for m in batch]
            added = admin.post("/commands/add-messages", json={"messages": batch})
            assert added.json()["queued"] == len(batch), added.text

        def settled() -> bool:
            queue = admin.get("/status").json()["queue"]
            return queue.get("sent") == 4 and queue.get("error") == 1 and queue.get("deferred") == 1

        _wait_for(settled, "the seeded queue to settle")


def test_the_status_page_renders_the_seeded_queue(browser, tmp_path, sink):
    from selenium.webdriver.common.by import By

    handler, smtp_port = sink
    handler.replies["RCPT:gone@example.com"] = "550 5.1.1 no such user"
    servers = start_server(tmp_path)
    url, _ = next(servers)
    try:
        _seed(url, smtp_port)
        browser.get(f"{url}/ui")
        assert browser.current_url.endswith("/ui/login")
        browser.find_element(By.NAME, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        _wait_for(lambda: browser.title == "mailproxy status", "the signed-in page")

        def row(section: str, first_cell: str) -> list[str]:
            xpath = (
                f"//h2[starts-with(., '{section}')]/following-sibling::table[1]"
                f"//tr[td[1][normalize-space()='{first_cell}']]/td"
            )
            return [cell.text for cell in browser.find_elements(By.XPATH, xpath)]

        headers = [
            th.text
            for th in browser.find_elements(
                By.XPATH, "//h2[.='Queue by tenant']/following-sibling::table[1]//th"
            )
        ]
        acme = dict(zip(headers, row("Queue by tenant", "acme"), strict=True))
        beta = dict(zip(headers, row("Queue by tenant", "beta"), strict=True))
        assert (acme["sent"], acme["error"], acme["scheduled"], acme["pending"]) == (
            "4", "1", "2", "0",
        )  # fmt: skip
        assert beta["deferred"] == "1"
        assert row("Throughput", "acme")[1:4] == ["4", "1", "0"]
        assert row("Paused accounts", "beta")[1] == "down"
        failure = row("Last failures", "acme")
        assert failure[1:3] == ["bounced", "main"]
        assert "no such user" in failure[3]
        reports = row("Delivery reports", "acme")
        assert reports[1] == "5"
        assert "egress" in reports[2]
        artifacts = Path(os.environ.get("GMP_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
        artifacts.mkdir(parents=True, exist_ok=True)
        screenshot = artifacts / "status-page.png"
        assert browser.save_screenshot(str(screenshot))
        assert screenshot.read_bytes().startswith(b"\x89PNG")
    finally:
        servers.close()
