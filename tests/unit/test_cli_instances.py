"""The instance commands driven in-process (the cyclopts app with captured output) on a
stopped instance, which they administer through the same API on its database."""

from __future__ import annotations

import json

import pytest

from mailproxy.entrypoints.cli import app
from mailproxy.entrypoints.instances import Instance


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    Instance(tmp_path / "home", "box").create("127.0.0.1", 1)

    def invoke(*args: str) -> tuple[int, str, str]:
        code = app(list(args), result_action="return_value")
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_tenants_and_accounts_round_trip(run):
    code, out, _ = run("box", "tenants", "add", "acme", "--name", "Acme Corp")
    assert code == 0
    assert "api key: " in out
    assert run("box", "tenants", "update", "acme", "--name", "Acme Inc")[1].strip() == (
        "tenant acme updated"
    )
    (tenant,) = json.loads(run("box", "tenants", "list", "--json")[1])
    assert tenant["name"] == "Acme Inc"
    assert run("box", "acme", "accounts", "add", "sink", "--kind", "capture", "--default")[0] == 0
    shown = json.loads(run("box", "acme", "accounts", "show", "sink", "--json")[1])
    assert (shown["kind"], shown["is_default"]) == ("capture", True)
    assert run("box", "acme", "accounts", "delete", "sink")[1].strip() == "account sink deleted"
    assert run("box", "acme", "accounts", "list")[1].strip() == "no accounts"
    assert run("box", "tenants", "delete", "acme", "--yes")[0] == 0
    assert run("box", "tenants", "list")[1].strip() == "no tenants"


def test_send_list_show_suspend_on_a_stopped_instance(run, tmp_path):
    run("box", "tenants", "add", "acme")
    run("box", "acme", "accounts", "add", "sink", "--kind", "capture", "--default")
    folder = tmp_path / "mails"
    folder.mkdir()
    for n in range(3):
        (folder / f"m{n}.eml").write_bytes(
            b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\n\r\nbody\r\n"
        )
    assert run("box", "acme", "send", str(folder))[1].strip() == "queued 3"
    listed = json.loads(run("box", "acme", "messages", "list", "--json")[1])
    assert [(m["id"], m["status"]) for m in listed] == [(f"m{n}", "pending") for n in range(3)]
    shown = json.loads(run("box", "acme", "messages", "show", "m1", "--json")[1])
    assert shown["why"]["reason"] == "queued"
    suspended = json.loads(run("box", "acme", "suspend", "--json")[1])
    assert suspended["suspended_batches"] == ["*"]
    assert json.loads(run("box", "acme", "activate", "--json")[1])["suspended_batches"] == []


def test_send_names_files_that_are_not_there(run, tmp_path):
    run("box", "tenants", "add", "acme")
    code, _, err = run("box", "acme", "send", str(tmp_path / "nope.eml"))
    assert code == 2
    assert err.strip() == f"error: not a file: {tmp_path / 'nope.eml'}"


def test_token_rotation_and_errors(run, tmp_path):
    first = run("box", "token")[1].strip()
    rotated = run("box", "token", "--rotate")[1].strip()
    assert len(rotated) >= 32
    assert rotated != first
    assert run("box", "token")[1].strip() == rotated
    code, _, err = run("box", "tenants", "show", "nobody")
    assert code == 1
    assert err.strip() == "error: tenant not found: nobody"
    code, _, err = run("ghost", "tenants", "list")
    assert code == 1
    assert "ghost is neither a command nor an instance" in err


HELP = [
    ("--help",), ("list", "--help"), ("start", "--help"), ("stop", "--help"),
    ("box", "--help"), ("box", "info", "--help"), ("box", "token", "--help"),
    ("box", "tenants", "add", "--help"), ("box", "tenants", "update", "--help"),
    ("box", "acme", "accounts", "add", "--help"), ("box", "acme", "messages", "list", "--help"),
    ("box", "acme", "send", "--help"), ("box", "acme", "suspend", "--help"),
    ("box", "acme", "run-now", "--help"),
]  # fmt: skip


@pytest.mark.parametrize("args", HELP, ids=" ".join)
def test_every_command_has_help(run, args):
    run("box", "tenants", "add", "acme")
    code, out, _ = run(*args)
    assert code in (0, None)
    assert "Usage" in out or "usage" in out


def commands_listed(help_page: str) -> set[str]:
    return {
        line.split()[1]
        for line in help_page.splitlines()
        if line.startswith("│ ") and len(line.split()) > 1 and not line.split()[1].startswith("-")
    }


def test_a_bare_level_lists_the_commands_of_that_level(run):
    run("box", "tenants", "add", "acme")
    code, instance_page, _ = run("box")
    assert code == 0
    assert {"info", "token", "rotate-key", "tenants"} <= commands_listed(instance_page)
    assert "accounts" not in commands_listed(instance_page)
    code, tenant_page, _ = run("box", "acme")
    assert code == 0
    assert {"accounts", "messages", "send", "run-now", "suspend", "activate"} <= commands_listed(
        tenant_page
    )
    assert "tenants" not in commands_listed(tenant_page)


def test_a_level_s_help_names_the_instance_and_tenant_typed(run):
    run("box", "tenants", "add", "acme")
    pages = {words: run(*words.split())[1] for words in
             ("box", "box tenants", "box acme", "box acme accounts", "box acme messages")}  # fmt: skip
    for words, page in pages.items():
        assert f"Usage: mail-proxy {words} COMMAND" in page
    assert "Administer box." in pages["box"]


@pytest.mark.parametrize("option", ["--instance", "--tenant-id"])
def test_the_instance_and_tenant_come_only_from_the_line_s_first_words(run, option):
    run("box", "tenants", "add", "acme")
    with pytest.raises(SystemExit) as exit_info:
        run("box", "acme", "accounts", "list", option, "other")
    assert exit_info.value.code == 2
    _, accounts_help, _ = run("box", "acme", "accounts", "list", "--help")
    assert option not in accounts_help
