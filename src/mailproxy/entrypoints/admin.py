"""Administering a named instance from the CLI through its HTTP API — over the network
when the instance runs, and in-process through the same app on its database when it is
stopped — so every command has one code path whatever the instance's state."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from mailproxy.bootstrap import build_proxy
from mailproxy.config import load_settings
from mailproxy.domain.errors import MailProxyError
from mailproxy.entrypoints.http import create_app
from mailproxy.entrypoints.instances import Instance


class ApiError(MailProxyError):
    """The instance answered an error, or could not be reached; the message is its
    ``error`` text. ``status`` is the HTTP status (0 when there was no answer) and
    ``answer`` the body it came with."""

    def __init__(self, message: str, status: int = 0, answer: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.answer = answer or {}


@contextlib.asynccontextmanager
async def connect(instance: Instance) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the instance's API with its admin token."""
    headers = {"X-API-Token": instance.token}
    if instance.pid() is not None:
        async with httpx.AsyncClient(
            base_url=instance.url, headers=headers, timeout=60, trust_env=False
        ) as client:
            yield client
        return
    settings = load_settings(instance.config_file, {}, instance_name=instance.name)
    proxy = build_proxy(settings, run_dispatcher=False)
    app = create_app(proxy, settings, own_proxy=False)
    async with (
        proxy,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]  # Litestar's ASGI types are narrower than httpx's
            base_url="http://instance",
            headers=headers,
        ) as client,
    ):
        yield client


async def call(client: httpx.AsyncClient, method: str, path: str, **options: Any) -> dict[str, Any]:
    """One API call; raises :class:`ApiError` with the instance's error text."""
    try:
        response = await client.request(method, path, **options)
    except httpx.HTTPError as exc:
        raise ApiError(f"no answer from {client.base_url}: {exc}") from exc
    status = response.status_code
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise ApiError(f"HTTP {status} from {path}", status) from None
    if status >= 400 or body.get("ok") is False:
        raise ApiError(str(body.get("error") or f"HTTP {status}"), status, body)
    return body


async def download(
    client: httpx.AsyncClient, path: str, sink: Callable[[bytes], object], **options: Any
) -> None:
    """GET ``path`` and hand its body to ``sink`` a chunk at a time as it arrives (an
    export may be larger than memory); raises :class:`ApiError` as :func:`call` does,
    before any chunk when the instance answers an error."""
    try:
        async with client.stream("GET", path, **options) as response:
            if response.status_code >= 400:
                await response.aread()
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                answer = body if isinstance(body, dict) else {}
                status = response.status_code
                raise ApiError(str(answer.get("error") or f"HTTP {status}"), status, answer)
            async for chunk in response.aiter_bytes():
                sink(chunk)
    except httpx.HTTPError as exc:
        raise ApiError(f"no answer from {client.base_url}: {exc}") from exc


def message_from_eml(path: Path, message_id: str) -> dict[str, Any]:
    """An add-messages MESSAGE from an ``.eml`` file: addresses, subject, text and html
    bodies, attachments inline (base64), and its Message-ID when it has one."""
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    message: dict[str, Any] = {
        "id": message_id,
        "from": str(parsed.get("From", "")),
        "to": [str(a) for a in parsed.get_all("To", [])],
        "subject": str(parsed.get("Subject", "")),
    }
    for header, field in (("Cc", "cc"), ("Bcc", "bcc")):
        if parsed.get_all(header):
            message[field] = [str(a) for a in parsed.get_all(header, [])]
    if parsed.get("Reply-To"):
        message["reply_to"] = str(parsed["Reply-To"])
    if parsed.get("Message-ID"):
        message["message_id"] = str(parsed["Message-ID"]).strip().strip("<>")
    text = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    message["body"] = text.get_content() if text is not None else ""
    if html is not None:
        message["body_html"] = html.get_content()
    attachments = []
    for part in parsed.iter_attachments():
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        attachments.append(
            {
                "filename": part.get_filename() or "attachment.bin",
                "storage_path": "base64:" + base64.b64encode(content).decode(),
                "mime_type": part.get_content_type(),
            }
        )
    if attachments:
        message["attachments"] = attachments
    return message
