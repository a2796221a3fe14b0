"""The command line's apps, one per level, built once at import.

::

    app             mail-proxy ...                  demo, serve, list, start, stop, restart
    instance_app    mail-proxy NAME ...             info, token, rotate-key, tenants ...
    tenant_app      mail-proxy NAME TENANT ...      accounts ..., messages ..., send, run-now, ...

The modules named after each level register their commands here. The instance and the
tenant a command works on are not command-line parameters of that command: they are
``parse=False`` parameters (:data:`TargetInstance`, :data:`TargetTenant`) that
``instances.instance_command`` fills in after reading them from the first tokens, as
cyclopts' meta apps do.
"""

from __future__ import annotations

from typing import Annotated

import cyclopts

from mailproxy import __version__
from mailproxy.entrypoints.instances import Instance

app = cyclopts.App(
    name="mail-proxy",
    help="Durable, rate-limited email delivery for applications.",
    version=__version__,
)

instance_app = cyclopts.App(name="mail-proxy NAME", help="Administer NAME.")
tenants_app = cyclopts.App(name="tenants", help="The instance's tenants.")
instance_app.command(tenants_app)

tenant_app = cyclopts.App(name="mail-proxy NAME TENANT")
accounts_app = cyclopts.App(name="accounts", help="The tenant's SMTP accounts.")
messages_app = cyclopts.App(name="messages", help="The tenant's messages.")
tenant_app.command(accounts_app)
tenant_app.command(messages_app)

#: The instance an instance or tenant command administers (from ``mail-proxy NAME``).
TargetInstance = Annotated[Instance, cyclopts.Parameter(parse=False)]
#: The tenant id a tenant command works on (from ``mail-proxy NAME TENANT``).
TargetTenant = Annotated[str, cyclopts.Parameter(parse=False)]
#: ``--json``: print the result as JSON for scripts instead of lines for people.
JsonFlag = Annotated[bool, cyclopts.Parameter(name=["--json"], help="Print JSON.")]
