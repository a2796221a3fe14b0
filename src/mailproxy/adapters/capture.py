"""Capture transport: a sandbox that writes each message as an ``.eml`` file.

Nothing is sent; the message counts as delivered. Files go to
``<root>/<tenant>/<account>/<message id>.eml`` (each part percent-encoded so that no id can
leave its folder), written to a temporary name and renamed, so a reader never sees half a
file. For first runs, demos and client integration tests.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import quote

from mailproxy.domain.mime import Outgoing
from mailproxy.domain.model import Account
from mailproxy.domain.outcome import Delivered, Failure, Outcome, Phase, classify


def safe_name(part: str) -> str:
    """A single path component for ``part``: percent-encoded, never ``.`` or ``..``."""
    name = quote(part, safe="-_@+=,")
    return name.replace(".", "%2E") if name in {".", ".."} else name


class CaptureTransport:
    """Implements ``Transport`` by writing ``.eml`` files under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, tenant_id: str, account_id: str, message_id: str) -> Path:
        return (
            self.root
            / safe_name(tenant_id)
            / safe_name(account_id)
            / f"{safe_name(message_id)}.eml"
        )

    def check(self, account: Account) -> None:
        """Every account may write into the folder: names become safe file names."""

    async def send(self, account: Account, message: Outgoing) -> Outcome:
        path = self.path_for(message.tenant_id, account.id, message.id)
        try:
            await asyncio.to_thread(self._write, path, message.rendered.content)
        except OSError as exc:
            return classify(Phase.DATA, Failure.INTERNAL, None, f"capture write failed: {exc}")
        return Delivered(smtp_code=None)

    @staticmethod
    def _write(path: Path, content: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(content)
        os.replace(temporary, path)

    async def close(self) -> None:
        return None
