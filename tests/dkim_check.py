"""Two independent DKIM verifiers for the tests: dkimpy, and OpenDKIM's own verifier
(``opendkim -t`` in test mode, Debian package ``opendkim``). Both read the public keys
from the records given here (OpenDKIM's ``TestPublicKeys`` file), never from DNS."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import dkim

from mailproxy.domain.dkim import DnsRecord
from tests.mailservers import install_packages, missing_server

OPENDKIM = "/usr/sbin/opendkim"


def dkimpy_verifies(message: bytes, records: list[DnsRecord]) -> bool:
    published = {f"{r.name}.".encode(): r.value.encode() for r in records}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return published.get(name)

    return bool(dkim.verify(message, dnsfunc=lookup))


def opendkim_says(message: bytes, records: list[DnsRecord]) -> str:
    """OpenDKIM's Authentication-Results line for ``message`` (``dkim=pass ...`` when its
    signature verifies); fails or skips the test when OpenDKIM cannot be had."""
    reason = install_packages(OPENDKIM, ("opendkim",))
    if reason is not None:
        missing_server(reason)
    with tempfile.TemporaryDirectory() as folder:
        keys, conf, mail = Path(folder, "keys"), Path(folder, "conf"), Path(folder, "mail")
        keys.write_text("".join(f"{r.name} {r.value}\n" for r in records))
        conf.write_text(f"Mode v\nTestPublicKeys {keys}\nSyslog no\nAlwaysAddARHeader yes\n")
        mail.write_bytes(message)
        done = subprocess.run(
            [OPENDKIM, "-x", str(conf), "-t", str(mail), "-vv"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    for line in done.stdout.splitlines():
        if "dkim=" in line:
            return line.strip()
    return f"no verdict (exit {done.returncode}): {done.stderr[-300:]}"
