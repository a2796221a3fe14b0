"""``mail-proxy demo``: the whole path, queue to delivered files, in one process."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Annotated, Any

import cyclopts

from mailproxy.bootstrap import build_proxy
from mailproxy.config import Settings, load_settings
from mailproxy.domain.model import Status, SubmitResult
from mailproxy.entrypoints.cli.apps import app
from mailproxy.entrypoints.cli.exits import UsageError, exit_code
from mailproxy.entrypoints.cli.output import counts
from mailproxy.entrypoints.instances import writable_folder

DEMO_TENANT = "demo"
DEMO_ACCOUNT = "sandbox"


def demo_messages(count: int, first: int = 1) -> list[dict[str, Any]]:
    """A varied batch numbered from ``first``: plain, html, alternative, non-ASCII, an
    attachment, priorities."""
    messages: list[dict[str, Any]] = []
    for n in range(first, first + count):
        message: dict[str, Any] = {
            "id": f"demo-{n:04d}",
            "from": "Demo Sender <sender@example.com>",
            "to": [f"recipient{n}@example.com"],
            "subject": f"Demo message {n}",
            "body": f"Hello from mailproxy, message {n}.",
            "priority": n % 4,
        }
        if n % 4 == 1:
            message["body_html"] = f"<p>Hello from <b>mailproxy</b>, message {n}.</p>"
        if n % 4 == 2:
            message["subject"] = f"Grüße, 你好 — message {n}"
        if n % 4 == 3:
            message["attachments"] = [
                {
                    "filename": "hello.txt",
                    "storage_path": "base64:" + base64.b64encode(b"attached text\n").decode(),
                }
            ]
        messages.append(message)
    return messages


async def run_demo(directory: Path, count: int) -> dict[str, Any]:
    """Queue ``count`` messages in a SQLite file under ``directory`` and deliver them
    through a capture account; return a summary. Another run in the same folder queues
    new messages after the earlier ones (the same ids would be refused as already sent)."""
    settings = load_settings(
        environ={"GMP_DB_PATH": str(directory / "mail_service.db")}, instance_name="demo"
    )
    async with build_proxy(settings, run_dispatcher=False) as proxy:
        await proxy.put_tenant({"id": DEMO_TENANT, "name": "Demo tenant"})
        await proxy.put_account(
            {"id": DEMO_ACCOUNT, "tenant_id": DEMO_TENANT, "kind": "capture", "is_default": True}
        )
        before = await proxy.counts(DEMO_TENANT)
        first = sum(before.values()) + 1
        result = await proxy.submit(demo_messages(count, first), tenant_id=DEMO_TENANT)
        attempted = await proxy.run_until_idle()
        counts = await proxy.counts(DEMO_TENANT)
    summary = await asyncio.to_thread(summarize_demo, settings, result, attempted, counts)
    # What this run did, apart from what earlier runs in the folder left in the queue.
    summary["this_run"] = {
        str(status): n - before.get(status, 0)
        for status, n in sorted(counts.items())
        if n > before.get(status, 0)
    }
    return summary


def summarize_demo(
    settings: Settings, result: SubmitResult, attempted: int, counts: dict[Status, int]
) -> dict[str, Any]:
    outbox = settings.capture_dir / DEMO_TENANT / DEMO_ACCOUNT
    return {
        "database": str(Path(settings.db_path).resolve()),
        "outbox": str(outbox.resolve()),
        "queued": result.queued,
        "rejected": [{"id": r.id, "reason": r.reason} for r in result.rejected],
        "attempted": attempted,
        "statuses": {str(status): n for status, n in sorted(counts.items())},
        "files": sorted(str(p.resolve()) for p in outbox.glob("*.eml")),
    }


@app.command
@exit_code
def demo(
    directory: Annotated[Path, cyclopts.Parameter(name=["--dir"])] = Path("mailproxy-demo"),
    count: int = 12,
    *,
    json_output: Annotated[bool, cyclopts.Parameter(name=["--json"])] = False,
) -> None:
    """Queue messages and deliver them to .eml files through a capture account.

    Parameters
    ----------
    directory
        Folder for the demo database and its outbox (created if missing).
    count
        How many messages to queue.
    json_output
        Print the summary as JSON.
    """
    if not 1 <= count <= 1000:
        raise UsageError("--count must be between 1 and 1000")
    writable_folder(directory, "demo", "choose another with --dir")
    summary = asyncio.run(run_demo(directory, count))
    if json_output:
        print(json.dumps(summary, indent=2))
        return
    print(f"queued {summary['queued']} messages in {summary['database']}")
    print(f"delivered: {counts(summary['this_run'])}")
    if summary["this_run"] != summary["statuses"]:
        print(f"in this folder's queue, with earlier runs: {counts(summary['statuses'])}")
    print(f"{len(summary['files'])} .eml files in {summary['outbox']}:")
    for path in summary["files"][:5]:
        print(f"  {path}")
    if len(summary["files"]) > 5:
        print(f"  ... and {len(summary['files']) - 5} more")
