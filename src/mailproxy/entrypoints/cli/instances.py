"""The top level's instance commands (``list``, ``start``, ``stop``, ``restart``) and
``mail-proxy NAME ...``, which hands the rest of the line to the instance's or the
tenant's app."""

from __future__ import annotations

import contextlib
import difflib
import json
import shutil
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Annotated, Any

import cyclopts
import msgspec

from mailproxy.domain.errors import MailProxyError
from mailproxy.domain.validation import is_tenant_id
from mailproxy.entrypoints.admin import ApiError
from mailproxy.entrypoints.cli.apps import app, commands_of, instance_app, tenant_app
from mailproxy.entrypoints.cli.exits import CommandFailed, UsageError, exit_code
from mailproxy.entrypoints.cli.output import request
from mailproxy.entrypoints.cli.serve import Port, serve_until_stopped
from mailproxy.entrypoints.instances import Instance, InstanceInfo, home, instances


@app.command(name="list")
@exit_code
def list_instances(
    *, json_output: Annotated[bool, cyclopts.Parameter(name=["--json"])] = False
) -> None:
    """Show the instances under GMP_HOME (default ~/.mail-proxy): running or stopped, URL, pid.

    An instance whose config.ini cannot be read is listed as broken, with why, among the
    others (``"error"`` in the JSON).

    Parameters
    ----------
    json_output
        Print JSON.
    """
    rows = [listed(i) for i in instances(home())]
    if json_output:
        print(json.dumps(msgspec.to_builtins(rows), indent=2))
        return
    if not rows:
        print(f"no instances in {home()} (create one with: mail-proxy start NAME)")
        return
    width = max(len(r.name) for r in rows)
    for row in rows:
        if row.error is not None:
            print(f"{row.name:<{width}}  broken: {row.error}")
            continue
        state = f"running  pid {row.pid}" if row.running else "stopped"
        print(f"{row.name:<{width}}  {row.url:<24}  {state}")


def listed(instance: Instance) -> InstanceInfo:
    """The instance's row in ``list``; one that cannot be read is a row with its error,
    so that it does not hide the others."""
    try:
        return instance.info()
    except MailProxyError as error:
        return InstanceInfo(
            name=instance.name, path=str(instance.path), url="", running=False, pid=None,
            error=str(error),
        )  # fmt: skip


@app.command
@exit_code
def start(
    name: str,
    *,
    host: str | None = None,
    port: Port | None = None,
    foreground: bool = False,
) -> int | None:
    """Start instance NAME (created on first start, with a generated admin token) and
    return once it answers; --foreground runs it in this terminal instead.

    A first start that fails leaves no instance behind, and a start that fails leaves
    the instance's config.ini as it was (--host and --port included).

    Example: ``mail-proxy start myserver --port 8080``

    Parameters
    ----------
    name
        Instance name (A-Z a-z 0-9 _ . -; not a command's name).
    host
        Address to bind (kept in the instance's config.ini).
    port
        Port to bind (kept in config.ini; default: the first free from 8000).
    foreground
        Do not go to the background.
    """
    if name in commands_of(app):
        raise UsageError(
            f"{name} is a mail-proxy command, so it cannot name an instance "
            f"(mail-proxy {name} ... would run the command): choose another name"
        )
    instance = Instance(home(), name)
    pid = instance.pid()
    if pid is not None:
        moved = " (stop it first to change --host or --port)" if host or port else ""
        print(f"{name} is already running at {instance.url} (pid {pid}){moved}")
        return None
    created = not instance.exists()
    new_folder = not instance.path.exists()
    earlier = None if created else instance.config_text()
    next_token = None if created else instance.next_token
    if created:
        instance.create(host, port)
    else:
        instance.update_server(host, port)
    try:
        instance.apply_next_token()
        # A config without a token is refused: its server could not be administered.
        token = instance.token
        if foreground:
            serve_until_stopped(instance.config_file, unseen_token=created)
            return None
        pid = instance.start()
    except MailProxyError:
        if new_folder:
            shutil.rmtree(instance.path, ignore_errors=True)
        elif earlier is None:
            instance.config_file.unlink(missing_ok=True)
        else:
            instance.restore_config(earlier)
            if next_token is not None:
                instance.keep_next_token(next_token)
        raise
    url = instance.url
    print(f"{name} running at {url} (pid {pid})")
    if created:
        print(f"admin token: {token}  (kept in {instance.config_file})")
    print(f"status page: {url}/ui")
    print(f"API docs:    {url}/schema")
    return None


@app.command
@exit_code
def stop(name: str) -> None:
    """Stop instance NAME gracefully: it stops claiming, finishes in-flight sends, exits.

    Parameters
    ----------
    name
        Instance name.
    """
    instance = Instance(home(), name)
    if not instance.exists():
        raise CommandFailed(f"no instance {name} in {home()}")
    stopped = instance.stop()
    print(f"{name} stopped" if stopped else f"{name} was not running")


@app.command
@exit_code
def restart(name: str) -> int:
    """Stop instance NAME if it runs, then start it.

    Parameters
    ----------
    name
        Instance name.
    """
    return stop(name) or start(name)


@contextlib.contextmanager
def named_levels(instance_name: str, tenant_id: str | None) -> Iterator[None]:
    """Put the instance (and tenant) named on this command line into the help of its
    level while the command runs: ``mail-proxy box acme accounts add --help`` shows
    ``Usage: mail-proxy box acme accounts add ...``, not the placeholders the apps are
    built with (cyclopts starts every usage line with the name of the app it parses
    with, which has no public setter)."""
    if tenant_id is None:
        level, words, summary = instance_app, instance_name, f"Administer {instance_name}."
    else:
        level, words = tenant_app, f"{instance_name} {tenant_id}"
        summary = f"Work on tenant {tenant_id} of {instance_name}."
    saved = level._name, level.help
    level._name, level.help = (f"mail-proxy {words}",), summary
    try:
        yield
    finally:
        level._name, level.help = saved


#: ``--help`` and ``-h`` after an instance name. The top level would answer them with its
#: own help before running ``instance_command``; a parameter of that name is how cyclopts
#: lets a default command take them (it then leaves those flags to the command).
HelpFlag = Annotated[bool, cyclopts.Parameter(name=["--help", "-h"], negative=(), show=False)]
#: The words after NAME: the instance's command, or a tenant id and the tenant's command.
Words = Annotated[str, cyclopts.Parameter(allow_leading_hyphen=True, show=False)]


@app.default
@exit_code
def instance_command(
    instance_name: Annotated[str | None, cyclopts.Parameter(show=False)] = None,
    /,
    *tokens: Words,
    help_asked: HelpFlag = False,
) -> Any:
    """Administer instance NAME (``mail-proxy NAME COMMAND``) or one of its tenants
    (``mail-proxy NAME TENANT COMMAND``); without NAME, the top level's help."""
    if instance_name is None:
        app.help_print([])
        return None
    instance = Instance(home(), instance_name)
    if not instance.exists():
        raise unknown_instance(instance_name, next(iter(tokens), None))
    targets: dict[str, Any] = {"instance": instance}
    level = instance_app
    # A first word that is not one of the instance's commands nor an option is a tenant id.
    if tokens and tokens[0] not in instance_app and not tokens[0].startswith("-"):
        check_tenant(instance, tokens[0], next(iter(tokens[1:]), None))
        level, targets["tenant_id"], tokens = tenant_app, tokens[0], tokens[1:]
    with named_levels(instance_name, targets.get("tenant_id")):
        # The cyclopts meta-app pattern: the level parses the rest of the line, and the
        # command's parse=False parameters (``injected``, by name) get the targets.
        words = [*tokens, "--help"] if help_asked else list(tokens)
        command, bound, injected = level.parse_args(words)
        return command(*bound.args, **bound.kwargs, **{name: targets[name] for name in injected})


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` most likely is a typo of, if one is close enough."""
    return next(iter(difflib.get_close_matches(word, list(candidates), n=1)), None)


def unknown_instance(word: str, following: str | None) -> MailProxyError:
    """The error for ``mail-proxy WORD FOLLOWING ...`` when WORD is no instance: a mistyped
    instance name (the closest instance first: the word stands where instance names go),
    a mistyped command (named alone when FOLLOWING is an instance, as in ``strat box``;
    else the line names both readings), or an instance still to be created."""
    names = [i.name for i in instances(home())]
    same_but_case = [name for name in names if name.lower() == word.lower()]
    command = closest(word, commands_of(app))
    if command and following in names:
        return UsageError(f"unknown command {word} (did you mean {command}?)")
    if name := next(iter(same_but_case), None) or closest(word, names):
        return CommandFailed(f"no instance {word} in {home()} (did you mean {name}?)")
    if command:
        return UsageError(
            f"no command or instance named {word} in {home()} (did you mean the command "
            f"{command}? to create an instance: mail-proxy start {word})"
        )
    return CommandFailed(
        f"{word} is neither a command nor an instance in {home()} (mail-proxy --help lists "
        f"the commands; mail-proxy start {word} creates the instance)"
    )


def check_tenant(instance: Instance, word: str, following: str | None) -> None:
    """Raise unless ``word`` is a tenant of ``instance`` (asked through its API, running or
    stopped): a mistyped instance command (usage) or tenant id (first when ``following``
    is a tenant's command, as in ``acmee accounts``), or a tenant still to be created."""
    if is_tenant_id(word):
        try:
            request(instance, "GET", f"/tenant/{word}")
            return
        except ApiError as error:
            if error.status != HTTPStatus.NOT_FOUND:
                raise
    command = closest(word, commands_of(instance_app))
    if command and (following is None or following not in tenant_app):
        raise UsageError(f"unknown command {word} (did you mean {command}?)")
    tenants = [t["id"] for t in request(instance, "GET", "/tenants")["tenants"]]
    if tenant := closest(word, tenants):
        raise CommandFailed(f"no tenant {word} on {instance.name} (did you mean {tenant}?)")
    if command:
        raise UsageError(f"unknown command {word} (did you mean {command}?)")
    create = f"; mail-proxy {instance.name} tenants add {word} creates the tenant"
    raise CommandFailed(
        f"{word} is neither a command of {instance.name} nor one of its tenants "
        f"(mail-proxy {instance.name} --help lists the commands"
        f"{create if is_tenant_id(word) else ''})"
    )
