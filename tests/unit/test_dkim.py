"""DKIM: the keys' rules (domain/dkim.py), the routes, keys sealed at rest, and messages
signed on their way through the real SMTP path into a sink, checked by dkimpy and by
OpenDKIM with the records the routes said to publish."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest
from cryptography.fernet import Fernet

from mailproxy.adapters.dkim_signer import DkimpySigner
from mailproxy.adapters.sealed import FernetCipher, SealedConfigStore
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.domain.dkim import DkimKey, DnsRecord, signing_key, with_key_added, without_key
from mailproxy.domain.envelope import author_domain
from mailproxy.domain.errors import Conflict, NotFound
from mailproxy.domain.model import MessageSpec, Status
from mailproxy.domain.validation import parse_message
from mailproxy.service import MailProxy
from tests.dkim_check import dkimpy_verifies, opendkim_says
from tests.unit.conftest import Api, proxy_to_sink


def key(domain, selector, ts, active=True):
    return DkimKey(
        domain=domain, selector=selector, private_key="k", public_key="p", created_ts=ts,
        active=active,
    )  # fmt: skip


def test_the_newest_active_key_of_the_author_s_domain_or_its_nearest_parent_signs():
    keys = with_key_added((), key("example.com", "a", 1))
    keys = with_key_added(keys, key("example.com", "b", 2))
    keys = with_key_added(keys, key("news.example.com", "n", 3))
    assert [(k.selector, k.active) for k in keys] == [("a", False), ("b", True), ("n", True)]
    assert signing_key(keys, "example.com").selector == "b"
    assert signing_key(keys, "Deep.News.Example.com").selector == "n"
    assert signing_key(keys, "shop.example.com").selector == "b"
    assert signing_key(keys, "example.org") is None
    assert signing_key(keys, "com") is None  # never a key of a bare top-level domain
    with pytest.raises(Conflict):
        with_key_added(keys, key("example.com", "a", 4))


def submitted(header: bytes) -> MessageSpec:
    raw = header + b"\r\nTo: x@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    spec = parse_message(
        {"id": "m", "from": "env@mailer.example", "to": ["x@example.org"], "subject": ""}
    )
    return msgspec.structs.replace(spec, raw=raw)


@pytest.mark.parametrize(
    ("header", "domain"),
    [
        (b"From: Shop <shop@Shop.Example>", "shop.example"),
        # A long display name folded by the client: the address is on the next line.
        (b"From: =?UTF-8?B?TmVnb3ppbyBkaSBwcm92YQ==?=\r\n <noreply@shop.example>", "shop.example"),
        (b'From: "ceo@bank.example"\r\n <alice@shop.example>', "shop.example"),
        ("From: shop@bücher.example".encode(), "xn--bcher-kva.example"),
        (b"From: bob@shown.example@signed.example", None),  # not one address: unsigned
        (b"From: " + b"(" * 500 + b"x@example.com", None),
        (b"From: a@one.example\r\nFrom: b@two.example", None),
        (b"Sender: s@mailer.example", None),  # no From: never the envelope's domain
    ],
)
def test_a_submitted_message_is_signed_for_its_from_field_only(header, domain):
    assert author_domain(submitted(header)) == domain


def test_removing_the_signing_key_lets_the_newest_remaining_one_sign():
    keys = with_key_added(
        with_key_added((), key("example.com", "a", 1)), key("example.com", "b", 2)
    )
    left = without_key(keys, "Example.com", "b")
    assert [(k.selector, k.active) for k in left] == [("a", True)]
    assert without_key(keys, "example.com", "a")[0].active  # b still signs
    with pytest.raises(NotFound):
        without_key(left, "example.com", "b")


async def test_keys_are_added_listed_and_removed_without_ever_showing_a_private_key(api: Api):
    made = await api.call(
        "A", "POST", "/tenant/A/dkim", json={"domain": "Example.com", "selector": "s1"}
    )
    assert made.status_code == 200, made.text
    answer = made.json()
    assert answer["key"] | {"created_ts": 0} == {
        "domain": "example.com", "selector": "s1", "algorithm": "rsa-sha256", "created_ts": 0,
        "active": True, "dns": answer["dns"],
    }  # fmt: skip
    assert answer["dns"]["name"] == "s1._domainkey.example.com"
    assert answer["dns"]["type"] == "TXT"
    assert answer["dns"]["value"].startswith("v=DKIM1; k=rsa; p=MII")
    imported = DkimpySigner().key_pair(None, "ed25519-sha256")[0]
    second = await api.call(
        "admin", "POST", "/tenant/A/dkim",
        json={"domain": "example.com", "selector": "s2", "algorithm": "ed25519-sha256",
              "private_key": imported},
    )  # fmt: skip
    assert second.json()["dns"]["value"].startswith("v=DKIM1; k=ed25519; p=")
    listed = (await api.call("A", "GET", "/tenant/A/dkim")).json()["keys"]
    assert [(k["selector"], k["active"]) for k in listed] == [("s1", False), ("s2", True)]
    for text in (made.text, second.text, (await api.call("A", "GET", "/tenant/A/dkim")).text):
        assert "PRIVATE" not in text
    assert "dkim" not in (await api.call("A", "GET", "/tenant/A")).text
    gone = await api.call("A", "DELETE", "/tenant/A/dkim/example.com/s2")
    assert gone.status_code == 200
    again = await api.call("A", "DELETE", "/tenant/A/dkim/example.com/s2")
    assert again.status_code == 404
    listed = (await api.call("A", "GET", "/tenant/A/dkim")).json()["keys"]
    assert [(k["selector"], k["active"]) for k in listed] == [("s1", True)]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"domain": "example.com", "selector": "s1"}, 409, None),
        ({"domain": "localhost", "selector": "x"}, 422, "domain"),
        ({"domain": "example.com", "selector": "bad selector"}, 422, "selector"),
        ({"domain": "example.com", "selector": "x", "algorithm": "rsa-sha1"}, 422, "algorithm"),
        ({"domain": "example.com", "selector": "x", "private_key": "nope"}, 422, "private_key"),
        ({"domain": "example.com", "selector": "x", "key": "nope"}, 422, "key"),
    ],
)
async def test_a_bad_key_is_refused_with_the_field_named(api: Api, body, status, field):
    await api.call("A", "POST", "/tenant/A/dkim", json={"domain": "example.com", "selector": "s1"})
    refused = await api.call("A", "POST", "/tenant/A/dkim", json=body)
    assert refused.status_code == status, refused.text
    if field is not None:
        assert field in refused.json()["error"]
    assert len((await api.call("A", "GET", "/tenant/A/dkim")).json()["keys"]) == 1


async def test_a_tenant_key_reaches_only_its_own_keys(api: Api):
    await api.call("A", "POST", "/tenant/A/dkim", json={"domain": "a.example", "selector": "s1"})
    for method, path, body in (
        ("GET", "/tenant/A/dkim", None),
        ("POST", "/tenant/A/dkim", {"domain": "b.example", "selector": "s1"}),
        ("DELETE", "/tenant/A/dkim/a.example/s1", None),
    ):
        answer = await api.call("B", method, path, json=body)
        assert answer.status_code in (403, 404), (method, answer.text)
    assert len((await api.call("A", "GET", "/tenant/A/dkim")).json()["keys"]) == 1


async def test_private_keys_are_sealed_at_rest(tmp_path: Path):
    store = SqliteStore(tmp_path / "sealed.db")
    cipher = FernetCipher([Fernet.generate_key().decode()])
    async with MailProxy(
        store=store, config=SealedConfigStore(store, cipher), transports={},
        run_dispatcher=False, signer=DkimpySigner(),
    ) as proxy:  # fmt: skip
        await proxy.put_tenant({"id": "acme"})
        made, _ = await proxy.dkim.add("acme", {"domain": "example.com", "selector": "s1"})
        assert "PRIVATE KEY" in made.private_key  # the service holds it in the clear
    with sqlite3.connect(tmp_path / "sealed.db") as db:
        (blob,) = db.execute("SELECT data FROM tenants WHERE id = 'acme'").fetchone()
    text = bytes(blob).decode()
    assert "PRIVATE KEY" not in text
    assert "fernet:" in text


async def send_one(proxy, sink, message_id, sender):
    handler, _ = sink
    message = {"id": message_id, "from": sender, "to": ["someone@example.org"],
               "subject": "Caffè", "body": "Prezzo: 5 € — grazie\n.\nfine"}  # fmt: skip
    assert (await proxy.submit([message], tenant_id="acme")).rejected == []
    await proxy.run_until_idle()
    return handler.received[-1].content


async def test_messages_are_signed_on_their_way_to_the_server(tmp_path, sink):
    async with proxy_to_sink(tmp_path, sink[1]) as proxy:
        records: list[DnsRecord] = []
        for selector, algorithm in (("r1", "rsa-sha256"), ("e1", "ed25519-sha256")):
            _, record = await proxy.dkim.add(
                "acme", {"domain": "example.com", "selector": selector, "algorithm": algorithm}
            )
            records.append(record)
            content = await send_one(proxy, sink, f"m-{selector}", "Shop <shop@news.example.com>")
            assert content.startswith(b"DKIM-Signature:")
            assert f"s={selector};".encode() in content.split(b"\r\n\r\n", 1)[0].replace(
                b"\r\n ", b" "
            )
            assert dkimpy_verifies(content, records)
            assert "dkim=pass" in opendkim_says(content, records)
        unsigned = await send_one(proxy, sink, "m-other", "other@example.net")
        assert b"DKIM-Signature" not in unsigned


async def test_a_message_that_cannot_be_signed_is_not_sent(tmp_path, sink):
    handler, port = sink
    async with proxy_to_sink(tmp_path, port) as proxy:
        await proxy.dkim.add("acme", {"domain": "example.com", "selector": "s1"})
        tenant = await proxy.get_tenant("acme")
        broken = msgspec.structs.replace(
            tenant.dkim_keys[0],
            private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        await proxy.put_tenant(msgspec.structs.replace(tenant, dkim_keys=(broken,)))
        before = len(handler.received)
        message = {"id": "m1", "from": "shop@example.com", "to": ["x@example.org"], "subject": "s"}
        await proxy.submit([message], tenant_id="acme")
        await proxy.run_until_idle()
        assert len(handler.received) == before
        stored = await proxy.get_message("acme", "m1")
        assert stored.status is Status.DEFERRED
        (deferred,) = [r.event for r in await proxy.outbox.pending_reports("acme", 10)]
        assert deferred.event == "deferred"
        assert "DKIM signing failed" in deferred.deferred_reason
