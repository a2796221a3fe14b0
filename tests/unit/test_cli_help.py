"""Every level of the command line answers ``--help`` with its own commands and options,
and the top level's help shows the whole shape. Run as the real console script."""

from __future__ import annotations

import functools

import pytest

from mailproxy.entrypoints.cli import app, instance_app, tenant_app
from tests.command_line import cli


def commands_of(level) -> list[str]:
    return [name for name in level if not name.startswith("-")]


def command_paths(level, prefix=()) -> list[tuple[str, ...]]:
    paths = []
    for name in commands_of(level):
        paths.append((*prefix, name))
        paths += command_paths(level[name], (*prefix, name))
    return paths


@pytest.mark.parametrize("args", [["--help"], ["-h"], []], ids=["--help", "-h", "nothing"])
def test_the_top_level_help_shows_every_level_and_its_commands(tmp_path, args):
    result = cli(tmp_path, *args)

    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert "Usage: mail-proxy COMMAND" in page
    assert "mail-proxy NAME COMMAND" in page
    assert "mail-proxy NAME TENANT COMMAND" in page
    assert "INSTANCE_NAME" not in page
    assert "mail-proxy NAME TENANT accounts add --help" in " ".join(page.split())
    listed = {line.split()[1] for line in page.splitlines() if line.startswith("│ ")}
    for level in (app, instance_app, tenant_app):
        assert set(commands_of(level)) <= listed
    assert "list | add | show | update" in page  # the tenants' own commands


@pytest.mark.parametrize(
    ("words", "shown", "not_shown"),
    [
        ("box", {"info", "token", "rotate-key", "tenants"}, {"demo", "start", "accounts"}),
        ("box acme", {"accounts", "messages", "send", "run-now", "suspend"}, {"start", "info"}),
        ("box tenants", {"list", "add", "show", "delete", "rotate-secret"}, {"start", "info"}),
        ("box acme accounts", {"list", "add", "show", "delete"}, {"start", "send"}),
    ],
)
def test_a_level_s_help_lists_that_level_s_commands(home, words, shown, not_shown):
    for flag in ("--help", "-h"):
        result = cli(home, *words.split(), flag)

        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Usage: mail-proxy {words} COMMAND")
        listed = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("│ ")}
        assert shown <= listed
        assert not (not_shown & listed)


def test_a_command_s_help_shows_its_own_options_under_the_names_typed(home):
    result = cli(home, "box", "acme", "accounts", "add", "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: mail-proxy box acme accounts add [OPTIONS]")
    for option in ("--host", "--port", "--user", "--password", "--limit-per-minute", "--default"):
        assert option in result.stdout
    assert "Instance commands" not in result.stdout
    assert "Instance commands" not in cli(home, "start", "--help").stdout
    nothing_saved = cli(home, "box", "acme", "accounts", "list", "--json")
    assert nothing_saved.stdout.strip() == "[]"


def test_help_after_the_instance_s_command_is_that_command_s(home):
    result = cli(home, "box", "tenants", "add", "--help")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: mail-proxy box tenants add [OPTIONS]")
    assert "--base-url" in result.stdout


LOWER_PATHS = [("box", *p) for p in command_paths(instance_app)] + [
    ("box", "acme", *p) for p in command_paths(tenant_app)
]


@pytest.mark.parametrize("words", LOWER_PATHS, ids=" ".join)
def test_every_lower_command_answers_help_with_its_own_usage(home, words, capsys):
    # In-process (the same parser as the console script) to cover every command cheaply.
    assert app([*words, "--help"], result_action="return_value") in (0, None)
    assert capsys.readouterr().out.startswith(f"Usage: mail-proxy {' '.join(words)}")


LEVELS = {"mail-proxy": app, "mail-proxy NAME": instance_app, "mail-proxy NAME TENANT": tenant_app}
ALL_PATHS = [
    f"{title} {' '.join(p)}" for title, level in LEVELS.items() for p in command_paths(level)
]


@pytest.mark.parametrize("line", ALL_PATHS)
def test_every_argument_and_option_of_every_command_says_what_it_is(line):
    title = max((t for t in LEVELS if line.startswith(t + " ")), key=len)
    command = LEVELS[title]
    for word in line.removeprefix(title).split():
        command = command[word]
    if command.default_command is None:
        return  # a group of commands: its page lists them
    arguments = command.assemble_argument_collection(parse_docstring=True)
    undescribed = [a.name for a in arguments if a.show and not a.parameter.help]
    assert undescribed == []


def leaf_commands(level, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The commands of ``level`` that run (not groups such as ``tenants``), as typed."""
    return [
        (*prefix, *path)
        for path in command_paths(level)
        if not commands_of(functools.reduce(lambda app_, name: app_[name], path, level))
    ]


@pytest.mark.parametrize(
    ("level", "words"),
    [(instance_app, ("box",)), (tenant_app, ("box", "acme"))],
    ids=["NAME", "TENANT"],
)
def test_instance_and_tenant_help_pages_read_cleanly(home, level, words):
    page = cli(home, *words, "--help").stdout
    assert "--version" not in page  # the program's: mail-proxy --version
    for command in leaf_commands(level, words):
        result = cli(home, *command, "--help")

        assert result.returncode == 0, result.stderr
        paragraphs = [" ".join(p.split()) for p in result.stdout.split("\n\n")]
        examples = [p for p in paragraphs if "Example:" in p]
        assert examples, f"{command}: no Example"
        assert all(p.startswith("Example: mail-proxy ") for p in examples), examples
        assert "--no-" not in result.stdout, result.stdout


def test_the_top_level_commands_examples_are_paragraphs_of_their_own(home):
    for command in ("start", "stop", "restart", "list", "serve", "demo"):
        page = cli(home, command, "--help").stdout
        paragraphs = [" ".join(p.split()) for p in page.split("\n\n")]
        examples = [p for p in paragraphs if "Example:" in p]
        assert all(p.startswith("Example: mail-proxy ") for p in examples), (command, examples)
