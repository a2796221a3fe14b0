"""The documentation site: its reference pages are what the code generates (so a setting,
command, metric or route cannot exist without its page), it builds with ``mkdocs build
--strict``, and the guides' code examples run."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import msgspec
import pytest

from mailproxy.domain.reporting import signature

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_reference", DOCS / "generate_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(generator: ModuleType) -> dict[str, str]:
    pages: dict[str, str] = generator.pages()
    return pages


def test_the_committed_reference_pages_are_what_the_code_generates(generated):
    stale = [
        name
        for name, text in generated.items()
        if (DOCS / "reference" / name).read_text(encoding="utf-8") != text
    ]
    assert stale == [], "run: python docs/generate_reference.py"


def test_every_setting_has_its_row_with_a_meaning(generator, generated):
    page = generated["configuration.md"]
    keys = generator.settings_keys()
    assert len(keys) >= 50
    for section, key, _default, meaning in keys:
        assert meaning, f"{section}.{key} has no #: comment in the code"
        assert f"`GMP_{section.upper()}_{key.upper()}`" in page


def test_every_command_has_its_section(generator, generated):
    from mailproxy.entrypoints import cli

    page = generated["cli.md"]
    paths = generator.command_paths(cli.app)
    assert {"serve", "start", "stop", "demo"} <= {p[0] for p in paths}
    for path in paths:
        assert f"### mail-proxy {' '.join(path)}\n" in page


def test_every_metric_and_route_is_in_its_page(generated):
    schema = msgspec.json.decode(generated["openapi.json"])
    for path, operations in schema["paths"].items():
        for method in operations:
            assert f"## {method.upper()} `{path}`" in generated["http-api.md"]
    for metric in ("gmp_sent", "gmp_pending_messages", "gmp_report_backlog", "gmp_unknown"):
        assert f"| `{metric}` |" in generated["metrics.md"]


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "guides" / "migrating" / "index.html").is_file()
    assert (tmp_path / "reference" / "configuration" / "index.html").is_file()


def fenced(path: Path, language: str) -> list[str]:
    blocks = re.findall(rf"^( *)```{language}\n(.*?)^\1```", path.read_text(), re.M | re.S)
    return [textwrap.dedent(code) for _indent, code in blocks]


SECRET, TIMESTAMP, BODY = "whsec-docs", "1800000000", b'{"delivery_report": []}'


def test_the_python_signature_check_accepts_a_real_signature_and_nothing_else():
    (code,) = fenced(DOCS / "guides" / "delivery-reports.md", "python")
    namespace: dict[str, object] = {}
    exec(compile(code, "delivery-reports.md", "exec"), namespace)  # the guide's own code
    verify = namespace["verify"]
    header = signature(SECRET, int(TIMESTAMP), BODY)
    assert verify(SECRET, TIMESTAMP, BODY, header) is True  # type: ignore[operator]
    forged = "v1=" + hmac.new(b"other", BODY, hashlib.sha256).hexdigest()
    assert verify(SECRET, TIMESTAMP, BODY, forged) is False  # type: ignore[operator]


def test_the_javascript_signature_check_accepts_a_real_signature_and_nothing_else(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    (code,) = fenced(DOCS / "guides" / "delivery-reports.md", "javascript")
    script = tmp_path / "verify.js"
    script.write_text(
        code + "\nconst [s, t, b, h] = process.argv.slice(2);\n"
        "process.stdout.write(String(verify(s, t, Buffer.from(b), h)));\n"
    )
    header = signature(SECRET, int(TIMESTAMP), BODY)
    for given, expected in ((header, "true"), (header[:-1] + "0", "false"), ("v1=", "false")):
        result = subprocess.run(
            [node, str(script), SECRET, TIMESTAMP, BODY.decode(), given],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert result.stdout == expected, result.stderr


def test_the_config_ini_of_the_running_guide_and_its_environment_twin_agree(tmp_path):
    from mailproxy.config import load_settings

    (ini,) = fenced(DOCS / "guides" / "running.md", "ini")
    (tmp_path / "config.ini").write_text(ini)
    from_file = load_settings(tmp_path / "config.ini", {})
    text = (DOCS / "guides" / "running.md").read_text()
    twin = re.search(r"The same through the environment: `(.*?) mail-proxy serve`", text, re.S)
    assert twin is not None
    environ = dict(pair.split("=", 1) for pair in twin.group(1).split())
    from_environment = load_settings(None, environ)
    assert from_file.server == from_environment.server
    assert from_file.storage == from_environment.storage
    assert from_file.delivery == from_environment.delivery
    assert from_file.security == from_environment.security
    assert (from_file.server.port, from_file.delivery.max_concurrency) == (8080, 16)
    # The HTTP service's example port is none that mail software listens on (SMTP, its
    # submission ports, the test servers' 2525 and 8025), so no reader mistakes one for
    # the other.
    assert from_file.server.port not in {25, 465, 587, 2525, 8025}


def test_the_embedding_guide_test_example_passes_under_pytest(tmp_path):
    (_first, example) = fenced(DOCS / "guides" / "embedding.md", "python")
    (tmp_path / "test_example.py").write_text(example)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
         "asyncio_mode=auto", str(tmp_path / "test_example.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


async def test_the_quick_start_real_server_account_is_accepted():
    from mailproxy.adapters.memory import MemoryStore
    from mailproxy.adapters.smtp import SmtpTransport
    from mailproxy.service import MailProxy

    (body,) = fenced(DOCS / "guides" / "quick-start.md", "json")
    store = MemoryStore()
    proxy = MailProxy(
        store=store, transports={"smtp": SmtpTransport()},
        run_dispatcher=False,
    )  # fmt: skip
    async with proxy:
        await proxy.put_tenant({"id": "acme"})
        account = await proxy.put_account(msgspec.json.decode(body) | {"tenant_id": "acme"})
    assert (account.host, account.port, account.use_tls) == ("smtp.example.com", 587, True)
