"""Debian's chromium driven through chromedriver (selenium), for the browser tests.

The browser is installed when it is missing (``apt-get install chromium
chromium-driver``, as root); a test is skipped, saying why, only when that is impossible.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BROWSER_PACKAGES = ("chromium", "chromium-driver")
#: Headless as root, and nothing that reaches out of the machine on its own.
QUIET_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
)  # fmt: skip


def install_browser() -> str | None:
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


@contextlib.contextmanager
def chromium(
    what: str, profile: Path, *flags: str, capabilities: dict[str, Any] | None = None
) -> Iterator[Any]:
    """A headless chromium for the test of ``what`` (named when it has to be skipped),
    with a fresh ``profile`` folder and ``flags`` beyond :data:`QUIET_FLAGS`."""
    missing = install_browser()
    if missing is not None:
        pytest.skip(f"{what} browser test skipped: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (*QUIET_FLAGS, f"--user-data-dir={profile}", *flags):
        options.add_argument(flag)
    for name, value in (capabilities or {}).items():
        options.set_capability(name, value)
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()
