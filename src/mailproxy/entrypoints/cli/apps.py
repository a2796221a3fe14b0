"""The command line's apps, one per level, built once at import.

::

    app             mail-proxy ...                  demo, serve, list, start, stop, restart
    instance_app    mail-proxy NAME ...             info, token, rotate-key, tenants ...
    tenant_app      mail-proxy NAME TENANT ...      accounts ..., messages ..., suppressions ...,
                                                    send, run-now, ...

The modules named after each level register their commands here. The instance and the
tenant a command works on are not command-line parameters of that command: they are
``parse=False`` parameters (:data:`TargetInstance`, :data:`TargetTenant`) that
``instances.instance_command`` fills in after reading them from the first tokens, as
cyclopts' meta apps do.

The top level's help shows the whole shape: its usage names the three levels, and its
command panel is followed by one panel per lower level (:class:`LevelPanels`), drawn from
those levels' apps so they list every command registered there.
"""

from __future__ import annotations

import difflib
from typing import Annotated

import cyclopts
import rich.console
import rich.text
from cyclopts.help import DefaultFormatter, HelpEntry, HelpPanel

from mailproxy import __version__
from mailproxy.entrypoints.instances import Instance

USAGE = """\
Usage: mail-proxy COMMAND [ARGS]
       mail-proxy NAME COMMAND [ARGS]
       mail-proxy NAME TENANT COMMAND [ARGS]"""

DESCRIPTION = """\
Durable, rate-limited email delivery for applications.

- NAME is an instance: `mail-proxy start NAME` creates one, `mail-proxy list` shows them.
- TENANT is one of its tenants: `mail-proxy NAME tenants add` creates one.
- Each level answers --help: `mail-proxy NAME TENANT accounts add --help`.
"""


class LevelPanels:
    """A cyclopts help formatter for the top level's command panel: that panel, then the
    commands of ``mail-proxy NAME`` and of ``mail-proxy NAME TENANT``.

    cyclopts gives each top-level command a copy of this panel's group, empty on its help
    page (``mail-proxy start --help``); that page stays as it is."""

    def __call__(
        self, console: rich.console.Console, options: rich.console.ConsoleOptions, panel: HelpPanel
    ) -> None:
        if not panel.entries:
            return
        formatter = DefaultFormatter()
        formatter(console, options, panel)
        for title, level in (
            ("Instance commands: mail-proxy NAME COMMAND", instance_app),
            ("Tenant commands: mail-proxy NAME TENANT COMMAND", tenant_app),
        ):
            formatter(console, options, level_panel(title, level))


def level_panel(title: str, level: cyclopts.App) -> HelpPanel:
    """A panel listing ``level``'s commands with the first line of their help; a group of
    commands (``tenants``) with the names of its own."""
    entries = []
    for name in sorted(commands_of(level)):
        command = level[name]
        summary = " ".join(command.help.strip().split("\n\n")[0].split())
        if subcommands := commands_of(command):
            summary = f"{summary.rstrip('.')}: {' | '.join(subcommands)}"
        entries.append(HelpEntry(positive_names=(name,), description=summary))
    return HelpPanel(format="command", title=title, entries=entries)


def commands_of(level: cyclopts.App) -> list[str]:
    return [name for name in level if not name.startswith("-")]


def one_line(error: cyclopts.CycloptsError) -> rich.text.Text:
    """A mistake the parser catches (unknown command or option, bad, missing or extra
    value) as one line on stderr, worded like every other error of the command line."""
    return rich.text.Text(f"error: {parse_error(error)}")


def parse_error(error: cyclopts.CycloptsError) -> str:
    """The message of a parser error, in the command line's words: ``unknown command X
    (did you mean Y?)``, ``missing ACCOUNT-ID``, ``unexpected argument: extra``; cyclopts'
    own message for the others."""
    tokens = error.unused_tokens or []
    if isinstance(error, cyclopts.UnknownCommandError) and tokens:
        known = commands_of(error.app) if error.app is not None else []
        close = difflib.get_close_matches(tokens[0], known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"one of: {', '.join(known)}"
        return f"unknown command {tokens[0]} ({hint})"
    if isinstance(error, cyclopts.UnusedCliTokensError) and tokens:
        return f"unexpected argument{'s' if len(tokens) > 1 else ''}: {' '.join(tokens)}"
    argument = error.argument
    if (
        isinstance(error, cyclopts.MissingArgumentError)
        and argument is not None
        and argument.field_info.is_positional
        and error.keyword is None  # `--account-id` typed without its value is an option
    ):
        return f"missing {argument.name.removeprefix('--').upper()}"
    text = " ".join(str(error).split())
    return text[:1].lower() + text[1:]


#: Where :func:`one_line` goes: stderr, without folding the line at the terminal's width.
ERRORS = rich.console.Console(stderr=True, soft_wrap=True, highlight=False)


#: Every app's parameters: a boolean option is a plain flag (``--json``), without the
#: ``--no-json`` cyclopts would add.
PLAIN_FLAGS = cyclopts.Parameter(negative=())

app = cyclopts.App(
    name="mail-proxy",
    help=DESCRIPTION,
    usage=USAGE,
    version=__version__,
    default_parameter=PLAIN_FLAGS,
    group_commands=cyclopts.Group("Commands", help_formatter=LevelPanels()),
    error_formatter=one_line,
    error_console=ERRORS,
)


# Parsed on their own by ``instances.instance_command``: they do not inherit from ``app``.
# The version is the program's: ``mail-proxy --version``, not a command of each level.
def _level_app(name: str, help_text: str) -> cyclopts.App:
    return cyclopts.App(
        name=name,
        help=help_text,
        version_flags=(),
        default_parameter=PLAIN_FLAGS,
        error_formatter=one_line,
        error_console=ERRORS,
    )


instance_app = _level_app("mail-proxy NAME", "Administer NAME.")
tenants_app = cyclopts.App(name="tenants", help="The instance's tenants.")
instance_app.command(tenants_app)

tenant_app = _level_app("mail-proxy NAME TENANT", "Work on TENANT of NAME.")
accounts_app = cyclopts.App(name="accounts", help="The tenant's SMTP accounts.")
messages_app = cyclopts.App(name="messages", help="The tenant's messages.")
suppressions_app = cyclopts.App(
    name="suppressions", help="The addresses the tenant's messages are not sent to."
)
dkim_app = cyclopts.App(name="dkim", help="The keys that DKIM-sign the tenant's mail.")
tenant_app.command(accounts_app)
tenant_app.command(messages_app)
tenant_app.command(suppressions_app)
tenant_app.command(dkim_app)

#: The instance an instance or tenant command administers (from ``mail-proxy NAME``).
TargetInstance = Annotated[Instance, cyclopts.Parameter(parse=False)]
#: The tenant id a tenant command works on (from ``mail-proxy NAME TENANT``).
TargetTenant = Annotated[str, cyclopts.Parameter(parse=False)]
#: A port number given as an option: a usage error (exit 2) outside 1-65535.
Port = Annotated[int, cyclopts.Parameter(validator=cyclopts.validators.Number(gte=1, lte=65535))]
#: A count given as an option (a limit, connections, --limit): a usage error below 1.
Count = Annotated[int, cyclopts.Parameter(validator=cyclopts.validators.Number(gte=1))]
#: ``--json``: print the result as JSON for scripts instead of lines for people.
JsonFlag = Annotated[
    bool, cyclopts.Parameter(name=["--json"], negative=(), help="Print JSON for scripts.")
]
