"""Webhook secret rotation: the signature header with one and two live secrets, the
receivers' checks the guide gives (Python and Node.js) against both, and the admin routes
through the real app over a SQLite file with an encryption key."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from litestar.testing import AsyncTestClient

from mailproxy.bootstrap import build_proxy
from mailproxy.config import load_settings
from mailproxy.domain.model import Tenant
from mailproxy.domain.reporting import (
    retire_webhook_secret,
    rotate_webhook_secret,
    signature,
    signature_header,
)
from mailproxy.entrypoints.cli import app
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.instances import Instance
from mailproxy.service import MailProxy
from tests.unit.test_docs import DOCS, fenced

NEW, OLD, OTHER = "whsec-new", "whsec-old", "whsec-other"
TIMESTAMP, BODY = "1800000000", b'{"delivery_report": []}'
ADMIN = {"X-API-Token": "admin-token-for-webhook-tests"}


def test_one_secret_signs_as_before_and_a_rotation_signs_with_both_current_first():
    ts = int(TIMESTAMP)
    assert signature_header((NEW, None), ts, BODY) == signature(NEW, ts, BODY)
    assert signature_header((NEW, OLD), ts, BODY) == (
        f"{signature(NEW, ts, BODY)}, {signature(OLD, ts, BODY)}"
    )
    assert signature_header((NEW, NEW), ts, BODY) == signature(NEW, ts, BODY)


def test_rotating_keeps_the_replaced_secret_and_retiring_drops_it():
    tenant = Tenant(id="t", webhook_secret=OLD, webhook_secret_previous="older")
    rotated = rotate_webhook_secret(tenant, NEW)
    assert (rotated.webhook_secret, rotated.webhook_secret_previous) == (NEW, OLD)
    retired = retire_webhook_secret(rotated)
    assert (retired.webhook_secret, retired.webhook_secret_previous) == (NEW, None)


def test_the_guides_python_check_accepts_either_secret_during_a_rotation():
    (code,) = fenced(DOCS / "guides" / "delivery-reports.md", "python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "delivery-reports.md", "exec"), namespace)  # the guide's own code
    verify = namespace["verify"]
    header = signature_header((NEW, OLD), int(TIMESTAMP), BODY)
    assert verify(NEW, TIMESTAMP, BODY, header) is True
    assert verify(OLD, TIMESTAMP, BODY, header) is True
    assert verify(OTHER, TIMESTAMP, BODY, header) is False
    forged = "v1=" + hmac.new(b"x", BODY, hashlib.sha256).hexdigest() + ", v1="
    assert verify(NEW, TIMESTAMP, BODY, forged) is False


def test_the_guides_javascript_check_accepts_either_secret_during_a_rotation(tmp_path):
    node = shutil.which("node")
    assert node is not None, "Node.js is needed to check the guide's JavaScript"
    (code,) = fenced(DOCS / "guides" / "delivery-reports.md", "javascript")
    script = tmp_path / "verify.js"
    script.write_text(
        code + "\nconst [s, t, b, h] = process.argv.slice(2);\n"
        "process.stdout.write(String(verify(s, t, Buffer.from(b), h)));\n"
    )
    header = signature_header((NEW, OLD), int(TIMESTAMP), BODY)
    for secret, expected in ((NEW, "true"), (OLD, "true"), (OTHER, "false")):
        result = subprocess.run(
            [node, str(script), secret, TIMESTAMP, BODY.decode(), header],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.stdout == expected, result.stderr


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[AsyncTestClient[Any], MailProxy]]:
    settings = load_settings(
        environ={
            "GMP_API_TOKEN": ADMIN["X-API-Token"],
            "GMP_DB_PATH": str(tmp_path / "webhook.db"),
            "GMP_SECURITY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        }
    )
    proxy = build_proxy(settings, run_dispatcher=False)
    async with AsyncTestClient(create_app(proxy, settings)) as client:
        yield client, proxy


async def test_the_rotation_routes_show_the_new_secret_once_and_keep_the_old_until_retired(api):
    client, proxy = api
    created = await client.post("/tenant", json={"id": "acme"}, headers=ADMIN)
    old = created.json()["webhook_secret"]
    rotated = await client.post("/tenant/acme/webhook-secret", headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["webhook_secret"]
    assert len(new) >= 32
    assert new != old
    stored = await proxy.get_tenant("acme")
    assert (stored.webhook_secret, stored.webhook_secret_previous) == (new, old)
    shown = await client.get("/tenant/acme", headers=ADMIN)
    assert shown.json()["tenant"]["has_webhook_secret_previous"] is True
    assert new not in shown.text
    assert old not in shown.text

    retired = await client.delete("/tenant/acme/webhook-secret/previous", headers=ADMIN)
    assert retired.status_code == 200, retired.text
    stored = await proxy.get_tenant("acme")
    assert (stored.webhook_secret, stored.webhook_secret_previous) == (new, None)
    shown = await client.get("/tenants", headers=ADMIN)
    assert shown.json()["tenants"][0]["has_webhook_secret_previous"] is False

    missing = await client.post("/tenant/nobody/webhook-secret", headers=ADMIN)
    assert missing.status_code == 404


def test_the_rotate_and_retire_secret_commands(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    Instance(tmp_path / "home", "box").create("127.0.0.1", 1)

    def run(*args: str) -> tuple[int, str]:
        code = app(list(args), result_action="return_value")
        return code, capsys.readouterr().out

    old = json.loads(run("box", "tenants", "add", "acme", "--json")[1])["webhook_secret"]
    code, out = run("box", "tenants", "rotate-secret", "acme", "--json")
    new = json.loads(out)["webhook_secret"]
    assert code == 0
    assert new != old
    shown = json.loads(run("box", "tenants", "show", "acme", "--json")[1])
    assert shown["has_webhook_secret_previous"] is True
    code, out = run("box", "tenants", "retire-secret", "acme")
    assert (code, out.strip()) == (
        0, "tenant acme: previous webhook secret retired; only the current one signs"
    )  # fmt: skip
    shown = json.loads(run("box", "tenants", "show", "acme", "--json")[1])
    assert shown["has_webhook_secret_previous"] is False
    code, out = run("box", "tenants", "rotate-secret", "acme")
    assert out.startswith("webhook secret: ")
    assert "mail-proxy box tenants retire-secret acme" in out


async def test_a_secret_set_by_hand_ends_a_rotation_and_rotating_is_the_service_s():
    from mailproxy.adapters.memory import MemoryStore
    from mailproxy.domain.access import ADMIN
    from mailproxy.service import MailProxy

    store = MemoryStore()
    proxy = MailProxy(store=store, transports={},
                      run_dispatcher=False, new_secret=lambda: "whsec-generated")  # fmt: skip
    async with proxy:
        await proxy.put_tenant({"id": "acme", "webhook_secret": "whsec-leaked"})
        assert await proxy.rotate_webhook_secret("acme") == "whsec-generated"
        rotated = await proxy.get_tenant("acme")
        assert (rotated.webhook_secret, rotated.webhook_secret_previous) == (
            "whsec-generated", "whsec-leaked",
        )  # fmt: skip
        await proxy.update_tenant("acme", {"webhook_secret": "whsec-by-hand"}, ADMIN)
        revoked = await proxy.get_tenant("acme")
        assert (revoked.webhook_secret, revoked.webhook_secret_previous) == ("whsec-by-hand", None)


def test_a_stored_tenant_names_the_previous_secret_only_during_a_rotation():
    import msgspec

    from mailproxy.domain.model import Tenant

    assert b"webhook_secret_previous" not in msgspec.json.encode(Tenant(id="t"))
    rotating = Tenant(id="t", webhook_secret="b", webhook_secret_previous="a")
    assert msgspec.json.decode(msgspec.json.encode(rotating), type=Tenant) == rotating
