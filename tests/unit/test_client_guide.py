"""The client guide (docs/guides/client.md): its examples are the files the suite runs,
the JavaScript check verifies calls signed as the service signs them, and the client
loads none of the service's modules."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailproxy.domain.reporting import signature_header
from tests.mailservers import install_packages, missing_server

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "client.md"
EXAMPLES = ROOT / "docs" / "examples"


@pytest.mark.parametrize(
    "example",
    [
        "send_and_receive.py",
        "litestar_receiver.py",
        "django_site/settings.py",
        "django_site/urls.py",
        "verify_report.js",
    ],
)
def test_the_guide_shows_each_example_as_the_suite_runs_it(example):
    assert (EXAMPLES / example).read_text().rstrip() in GUIDE.read_text()


def test_each_short_example_stays_short():
    # The guide promises a plain app and a Django site in under 20 lines each (without
    # blank lines, imports and the settings every Django site has anyway).
    def lines(path: Path) -> int:
        return sum(
            1 for line in path.read_text().splitlines()
            if line.strip() and not line.startswith(("import ", "from ", "#"))
        )  # fmt: skip

    assert lines(EXAMPLES / "send_and_receive.py") < 20
    django = lines(EXAMPLES / "django_site" / "urls.py") + 4  # the four MAILPROXY settings
    assert django < 20


DRIVER = """
const { verifyReport } = require(process.argv[2]);
const given = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
const body = Buffer.from(given.body, "base64");
console.log(JSON.stringify(verifyReport(given.headers, body, given.secrets)));
"""


def node_verifies(tmp_path: Path, headers: dict, body: bytes, secrets: list[str]):
    node = shutil.which("node")
    if node is None:
        reason = install_packages("/usr/bin/node", ("nodejs",))
        if reason is not None:
            missing_server(reason)
        node = "/usr/bin/node"
    driver = tmp_path / "driver.js"
    driver.write_text(DRIVER)
    given = {"headers": headers, "body": base64.b64encode(body).decode(), "secrets": secrets}
    done = subprocess.run(
        [node, str(driver), str(EXAMPLES / "verify_report.js")],
        input=json.dumps(given), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def test_the_javascript_check_accepts_what_the_service_signs_and_nothing_else(tmp_path):
    body = json.dumps({"delivery_report": [{"event": "sent", "id": "m1"}]}).encode()
    now = int(time.time())

    def headers(secrets: list[str | None], ts: int = now) -> dict[str, str]:
        return {"x-mail-proxy-timestamp": str(ts),
                "x-mail-proxy-signature": signature_header(secrets, ts, body)}  # fmt: skip

    assert node_verifies(tmp_path, headers(["s1"]), body, ["s1"]) == [{"event": "sent", "id": "m1"}]
    rotating = headers(["new", "old"])  # during a rotation: two signatures
    assert node_verifies(tmp_path, rotating, body, ["old"]) is not None
    assert node_verifies(tmp_path, headers(["s1"]), body, ["other"]) is None
    assert node_verifies(tmp_path, headers(["s1"], now - 3600), body, ["s1"]) is None
    assert node_verifies(tmp_path, headers(["s1"]), body + b" ", ["s1"]) is None


def test_the_client_loads_none_of_the_service_s_modules():
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import sys, mailproxy.client, mailproxy.webhooks; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    heavy = ("litestar", "uvicorn", "aiosmtpd", "psycopg", "sqlite_utils", "mailproxy.adapters",
             "mailproxy.service", "mailproxy.entrypoints")  # fmt: skip
    assert [m for m in loaded if m.startswith(heavy)] == []
