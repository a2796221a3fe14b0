"""``mail-proxy NAME TENANT dkim ...`` driven in-process (the cyclopts app with captured
output) on a stopped instance."""

from __future__ import annotations

import json
import time

from mailproxy.adapters.dkim_signer import DkimpySigner


def test_a_key_is_added_listed_published_rotated_and_removed(run, tmp_path):
    code, out, err = run("box", "acme", "dkim", "add", "example.com", "mail2026")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "mail2026._domainkey.example.com signs example.com's mail from now on"
    assert lines[2].startswith('  mail2026._domainkey.example.com  TXT  "v=DKIM1; k=rsa; p=')

    pem = tmp_path / "ed.pem"
    pem.write_text(DkimpySigner().key_pair(None, "ed25519-sha256")[0])
    imported = run("box", "acme", "dkim", "add", "example.org", "ed1", "--algorithm",
                   "ed25519-sha256", "--private-key", str(pem), "--json")  # fmt: skip
    assert json.loads(imported[1])["dns"]["value"].startswith("v=DKIM1; k=ed25519; p=")

    code, out, _ = run("box", "acme", "dkim", "rotate", "example.com")
    today = time.strftime("%Y%m%d", time.gmtime())
    assert code == 0
    assert f"mp{today}._domainkey.example.com signs" in out

    listed = json.loads(run("box", "acme", "dkim", "list", "--json")[1])
    assert [(k["domain"], k["selector"], k["active"]) for k in listed] == [
        ("example.com", "mail2026", False), ("example.org", "ed1", True),
        ("example.com", f"mp{today}", True),
    ]  # fmt: skip
    table = run("box", "acme", "dkim", "list")[1]
    assert "signs" in table
    assert "PRIVATE" not in table

    code, out, _ = run("box", "acme", "dkim", "dns", "example.com")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == [
        "mail2026._domainkey.example.com.", f"mp{today}._domainkey.example.com.",
    ]  # fmt: skip
    assert all(' IN TXT "v=DKIM1; k=rsa; p=' in line for line in out.splitlines())
    # Zone files take strings of 255 characters at most: the value comes in pieces.
    for line in out.splitlines():
        pieces = line.split(" IN TXT ", 1)[1].split('" "')
        assert len(pieces) == 2
        assert all(len(piece.strip('"')) <= 255 for piece in pieces)

    assert run("box", "acme", "dkim", "remove", "example.com", "mail2026")[:2] == (
        0, "mail2026._domainkey.example.com removed\n",
    )  # fmt: skip
    code, _, err = run("box", "acme", "dkim", "remove", "example.com", "mail2026")
    assert code == 1
    assert "no DKIM key mail2026 for example.com" in err


def test_mistakes_are_one_line_errors(run, tmp_path):
    code, _, err = run("box", "acme", "dkim", "add", "not a domain", "s1")
    assert code != 0
    assert "domain" in err
    assert "Traceback" not in err
    code, _, err = run("box", "acme", "dkim", "add", "example.com", "s1", "--private-key",
                       str(tmp_path / "missing.pem"))  # fmt: skip
    assert code == 1
    assert "cannot read" in err
    code, _, err = run("box", "acme", "dkim", "dns")
    assert code == 1
    assert "no DKIM keys" in err
    run("box", "acme", "dkim", "add", "example.com", "s1")
    code, _, err = run("box", "acme", "dkim", "add", "example.com", "s1")
    assert code == 1
    assert "already exists" in err
