"""A word the command line does not know is an error that offers the closest command or
existing name, never a new name nor a help page. Run as the real console script on a
stopped instance (its tenants are read through the same API as a running one's)."""

from __future__ import annotations

import pytest

from tests.command_line import cli


@pytest.mark.parametrize(
    ("words", "code", "error"),
    [
        ("strat box", 2, "unknown command strat (did you mean start?)"),
        ("lst", 2, "unknown command lst (did you mean list?)"),
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
