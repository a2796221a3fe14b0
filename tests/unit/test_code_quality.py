"""The project's gates run with the suite: lint, format, strict types, the layer rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "ruff", "check", "."],
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        [sys.executable, "-m", "mypy"],
        [str(Path(sys.executable).with_name("lint-imports"))],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict", "import-linter"],
)
def test_gate_passes(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_domain_never_reads_the_clock_through_datetime():
    """The import contract keeps ``time``, ``os``, ``socket``, ``mimetypes`` and the rest out
    of the domain; ``datetime`` stays (it formats the instants that come in), so its clock
    reads are looked for here."""
    reads = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "src" / "mailproxy" / "domain").glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if any(call in line for call in ("datetime.now(", ".utcnow(", "date.today(", ".today("))
    ]
    assert reads == []


def test_attachment_types_do_not_depend_on_the_host():
    from mailproxy.domain.media_types import guess_type

    assert guess_type("Report.PDF") == "application/pdf"
    assert guess_type("archive.tar.gz") == "application/gzip"
    assert guess_type("no-extension") == "application/octet-stream"
    assert guess_type("strange.xyz123") == "application/octet-stream"


_IMPORT_EACH_ALONE = """
import importlib, pkgutil, sys
import mailproxy
names = [m.name for m in pkgutil.walk_packages(mailproxy.__path__, "mailproxy.")]
failed = []
for name in names:
    for loaded in [n for n in sys.modules if n == "mailproxy" or n.startswith("mailproxy.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_first_in_a_fresh_process():
    # An import cycle shows only when the module on it is the first one imported: the
    # rest of the suite always imports the package in one order.
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_ALONE], capture_output=True, text=True, check=True
    )
    count, *failures = done.stdout.splitlines()
    assert int(count) > 60
    assert [f for f in failures if f] == []
