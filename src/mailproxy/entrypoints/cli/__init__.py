"""The ``mail-proxy`` command line.

One cyclopts app per level, built once at import (:mod:`.apps`), with its commands in
the module of that level:

- :mod:`.demo`, :mod:`.serve` and :mod:`.instances`: ``mail-proxy COMMAND``, and
  ``mail-proxy NAME ...``, which reads the instance (and the tenant) from the first
  tokens and runs the command below with them;
- :mod:`.instance`: ``mail-proxy NAME info | token | rotate-key | tenants ...``;
- :mod:`.accounts`, :mod:`.tenant`, :mod:`.suppressions` and :mod:`.dkim`: ``mail-proxy
  NAME TENANT accounts ... | messages ... | suppressions ... | dkim ... | send | run-now |
  suspend | activate``.

What they share: :mod:`.output` (the API session; lines for people, JSON for scripts;
progress bars), :mod:`.prompts` (questions at a terminal), :mod:`.exits` (exit codes).

A new command goes in the module of its level, decorated with that level's app; it
receives the instance and the tenant as the ``parse=False`` parameters
``instance: TargetInstance`` and ``tenant_id: TargetTenant``. It raises on failure:
exit codes (0 ok, 1 error, 2 usage) are decided in one place, :mod:`.exits`.
"""

from __future__ import annotations

import signal
import sys

from mailproxy.entrypoints.cli import (
    accounts,
    demo,
    dkim,
    instance,
    instances,
    serve,
    suppressions,
    tenant,
)
from mailproxy.entrypoints.cli.apps import app, instance_app, tenant_app
from mailproxy.entrypoints.logs import configure_logging

__all__ = ["app", "instance_app", "main", "tenant_app"]

# The command modules register on the apps when imported, in this order (help and the
# reference page list commands in it).
COMMAND_MODULES = (demo, serve, instances, instance, accounts, tenant, suppressions, dkim)


def main() -> None:
    configure_logging("warning")  # commands print their results; `serve` logs more
    # Output piped into `head` and closed early ends the program quietly, as Unix tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    result = app()
    sys.exit(result if isinstance(result, int) else 0)
