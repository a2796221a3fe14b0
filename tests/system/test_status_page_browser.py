"""The status page in a real headless browser (Debian's chromium driven through
chromedriver): sign in with the form, read the numbers and the reasons of a seeded queue
off the rendered page, on a phone's screen (390 px) and a desk's (1280 px), measure that
the page fits both, and sign out for good.

The browser is installed by this test's setup when it is missing (``apt-get install
chromium chromium-driver``, as root); the test is skipped, saying why, only when that is
impossible. The screenshots go to ``build/test-artifacts/`` (or to the folder in
``GMP_TEST_ARTIFACTS``): ``status-page.png`` at 1280 px, ``status-page-390.png`` and
``status-page-sign-in-390.png`` at 390 px.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.system.browser import chromium
from tests.system.conftest import TOKEN, free_port, start_server

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
BROWSER_PACKAGES = ("chromium", "chromium-driver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with chromium("status page", tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


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


def _artifacts() -> Path:
    folder = Path(os.environ.get("GMP_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _at_width(browser, width: int, *, mobile: bool) -> None:
    """Lay the page out as a screen ``width`` CSS pixels wide (a phone's with ``mobile``:
    the viewport meta tag then decides the layout width, as on a phone)."""
    metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def _screenshot(browser, name: str) -> None:
    """The whole page, however long, as ``name`` in the artifacts folder."""
    width = browser.execute_script("return window.innerWidth")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    mobile = width < 600
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    path = _artifacts() / name
    assert browser.save_screenshot(str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    _at_width(browser, width, mobile=mobile)


#: What the layout checks measure in the page: the widths, the sign-out control's box,
#: and the smallest font of any element that shows text.
_LAYOUT = """
const button = document.getElementById('sign-out');
const box = button && button.getBoundingClientRect();
let smallest = Infinity;
for (const element of document.body.querySelectorAll('*')) {
  const own = [...element.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  if (own) smallest = Math.min(smallest, parseFloat(getComputedStyle(element).fontSize));
}
const boxes = [...document.querySelectorAll('.scroll')].map(b => b.getBoundingClientRect().right);
return {
  inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
  signOut: box && {left: box.left, right: box.right, top: box.top, width: box.width},
  smallestFont: smallest, widestBox: Math.max(0, ...boxes),
};
"""


def _assert_fits(browser, width: int) -> None:
    layout = browser.execute_script(_LAYOUT)
    assert layout["inner"] == width, layout  # laid out for the screen, not zoomed out
    assert layout["scroll"] <= layout["inner"], layout  # the page never scrolls sideways
    assert layout["widestBox"] <= layout["inner"], layout  # wide tables scroll in their box
    assert layout["smallestFont"] >= 14, layout
    sign_out = layout["signOut"]
    assert sign_out is not None, layout
    assert sign_out["width"] > 0, layout
    assert sign_out["left"] >= 0, layout
    assert sign_out["right"] <= layout["inner"], layout
    assert 0 <= sign_out["top"] < 900, layout  # on the first screen


def _sign_in(browser, url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/ui")
    assert browser.current_url.endswith("/ui/login")
    help_text = browser.find_element(By.TAG_NAME, "body").text
    assert "./admin_token" in help_text
    assert "mail-proxy NAME token" in help_text
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait_for(lambda: browser.title == "mailproxy status", "the signed-in page")


def _rows(browser, section: str) -> list[dict[str, str]]:
    """The rows of the first table under the section titled ``section``, by header."""
    from selenium.webdriver.common.by import By

    table = f"//h2[starts-with(., '{section}')]/following-sibling::div[1]//table"
    headers = [th.text for th in browser.find_elements(By.XPATH, f"{table}//th")]
    return [
        dict(zip(headers, [td.text for td in row.find_elements(By.XPATH, "td")], strict=False))
        for row in browser.find_elements(By.XPATH, f"{table}//tr[td]")
    ]


def _assert_seeded_numbers(browser) -> None:
    queue = {row["tenant"]: row for row in _rows(browser, "Queue by tenant")}
    acme = queue["acme"]
    assert (acme["sent"], acme["error"], acme["scheduled"], acme["pending"]) == (
        "4", "1", "2", "0",
    )  # fmt: skip
    assert queue["beta"]["deferred"] == "1"
    throughput = {row["tenant"]: row for row in _rows(browser, "Throughput")}
    assert [throughput["acme"][s] for s in ("sent", "error", "unknown")] == ["4", "1", "0"]
    waiting = {(row["tenant"], row["reason"]): row for row in _rows(browser, "Why messages wait")}
    assert set(waiting) == {("acme", "scheduled"), ("beta", "account_paused")}
    assert (waiting["acme", "scheduled"]["messages"], waiting["acme", "scheduled"]["example"]) == (
        "2", "later0",
    )  # fmt: skip
    paused = waiting["beta", "account_paused"]
    assert (paused["messages"], paused["example"]) == ("1", "stuck")
    assert "offers no AUTH" in paused["detail"]
    (pause,) = _rows(browser, "Paused accounts")
    assert (pause["tenant"], pause["account"]) == ("beta", "down")
    assert "offers no AUTH" in pause["reason"]
    (failure,) = _rows(browser, "Last failures")
    assert [failure[c] for c in ("tenant", "message", "account")] == ["acme", "bounced", "main"]
    assert "no such user" in failure["error"]
    reports = {row["tenant"]: row for row in _rows(browser, "Delivery reports")}
    assert reports["acme"]["waiting"] == "6"  # five messages; the bounce of "bounced"
    assert "egress" in reports["acme"]["last error"]


def _sign_out_for_good(browser, url: str) -> None:
    """Sign out with the button; the cookie, put back as a replay, opens nothing."""
    from selenium.webdriver.common.by import By

    session = browser.get_cookie("gmp_session")
    assert session is not None
    browser.find_element(By.ID, "sign-out").click()
    _wait_for(lambda: browser.current_url.endswith("/ui/login"), "the sign-in form")
    assert browser.get_cookie("gmp_session") is None
    browser.add_cookie({k: session[k] for k in ("name", "value", "path")})
    browser.get(f"{url}/ui")
    assert browser.current_url.endswith("/ui/login")


def test_the_status_page_renders_the_seeded_queue_on_a_desk_and_on_a_phone(browser, tmp_path, sink):
    handler, smtp_port = sink
    handler.replies["RCPT:gone@example.com"] = "550 5.1.1 no such user"
    # The server runs the code under test, wherever the test's PYTHONPATH points.
    pythonpath = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}
    servers = start_server(tmp_path, env=pythonpath)
    url, _ = next(servers)
    try:
        _seed(url, smtp_port)
        _at_width(browser, 390, mobile=True)
        _sign_in(browser, url)
        _assert_seeded_numbers(browser)
        _assert_fits(browser, 390)
        _screenshot(browser, "status-page-390.png")
        _at_width(browser, 1280, mobile=False)
        browser.refresh()
        _assert_fits(browser, 1280)
        _screenshot(browser, "status-page.png")
        _sign_out_for_good(browser, url)
        _at_width(browser, 390, mobile=True)
        _screenshot(browser, "status-page-sign-in-390.png")
    finally:
        servers.close()
