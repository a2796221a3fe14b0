"""A word the command line does not know is an error that offers the closest command or
existing name, never a new name nor a help page. Run as the real console script on a
stopped instance (its tenants are read through the same API as a running one's)."""

from __future__ import annotations

import pytest

from mailproxy.entrypoints.instances import Instance
from tests.command_line import cli


@pytest.mark.parametrize(
    ("words", "code", "error"),
    [
        ("strat box", 2, "unknown command strat (did you mean start?)"),
        (
            "lst",
            2,
            "no command or instance named lst in {home} (did you mean the command list? to "
            "create an instance: mail-proxy start lst)",
        ),
        ("bx info", 1, "no instance bx in {home} (did you mean box?)"),
        ("box infoo", 2, "unknown command infoo (did you mean info?)"),
        ("box tokn --rotate", 2, "unknown command tokn (did you mean token?)"),
        ("box acmee accounts list", 1, "no tenant acmee on box (did you mean acme?)"),
    ],
)
def test_a_typo_is_an_error_with_the_closest_command_or_name(home, words, code, error):
    result = cli(home, *words.split())

    assert (result.returncode, result.stderr) == (code, f"error: {error.format(home=home)}\n")
    assert result.stdout == ""
    assert sorted(p.name for p in home.iterdir()) == ["box"]


def test_an_unknown_instance_far_from_every_command_says_how_to_create_it(home):
    result = cli(home, "ghost", "tenants", "list")

    assert result.returncode == 1
    assert result.stderr == (
        f"error: ghost is neither a command nor an instance in {home} (mail-proxy --help "
        "lists the commands; mail-proxy start ghost creates the instance)\n"
    )


def test_an_unknown_tenant_far_from_every_command_says_how_to_create_it(home):
    result = cli(home, "box", "globex")

    assert result.returncode == 1
    assert result.stderr == (
        "error: globex is neither a command of box nor one of its tenants (mail-proxy box "
        "--help lists the commands; mail-proxy box tenants add globex creates the tenant)\n"
    )
    assert result.stdout == ""


def test_a_typo_below_a_level_is_one_line_with_the_closest_command(home):
    result = cli(home, "box", "acme", "acounts", "list")

    assert result.returncode == 2
    assert result.stderr == "error: unknown command acounts (did you mean accounts?)\n"


@pytest.mark.parametrize("typo", ["myservr", "myserve", "Myserver"])
def test_a_mistyped_instance_name_gets_the_instance_before_a_command(home, typo):
    """Each of these words is close to the command ``serve`` too; the word stands where an
    instance name goes, and an instance is close."""
    Instance(home, "myserver").create("127.0.0.1", 1)

    result = cli(home, typo, "info")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"error: no instance {typo} in {home} (did you mean myserver?)\n"


def test_a_word_near_a_command_and_no_instance_names_both_readings(tmp_path):
    empty = tmp_path / "nothing-here"
    result = cli(empty, "myserver", "info")

    assert (result.returncode, result.stderr) == (
        2,
        f"error: no command or instance named myserver in {empty} (did you mean the "
        "command serve? to create an instance: mail-proxy start myserver)\n",
    )
    assert not empty.exists()


@pytest.mark.parametrize("command", ["serve", "list", "start", "demo"])
def test_an_instance_may_not_be_named_as_a_command(home, command):
    result = cli(home, "start", command)
    if result.returncode == 0:  # without the refusal: not left running
        cli(home, "stop", command)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"error: {command} is a mail-proxy command, so it cannot name an instance "
        f"(mail-proxy {command} ... would run the command): choose another name\n"
    )
    assert sorted(p.name for p in home.iterdir()) == ["box"]


def test_a_mistyped_tenant_before_a_tenant_command_gets_the_tenant(home):
    """``tokyo`` is close to the instance command ``token``: before ``accounts`` the word
    is a tenant's place."""
    assert cli(home, "box", "tenants", "add", "tokyo").returncode == 0

    mistyped = cli(home, "box", "tokio", "accounts", "list")
    command = cli(home, "box", "tokn", "--rotate")

    assert (mistyped.returncode, mistyped.stderr) == (
        1, "error: no tenant tokio on box (did you mean tokyo?)\n"
    )  # fmt: skip
    assert (command.returncode, command.stderr) == (
        2, "error: unknown command tokn (did you mean token?)\n"
    )  # fmt: skip
