"""Secrets at rest: with ``security.encryption_key`` set no stored secret can be read in
the database (the SQLite file and its WAL, a dump of every PostgreSQL row); keys are
validated at start-up, rotate, and a missing or wrong key stops start-up with one line.
Everything goes through ``build_proxy`` on real databases."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import psycopg.sql
import pytest
from cryptography.fernet import Fernet

from mailproxy.bootstrap import build_proxy, check_storage, reseal_secrets
from mailproxy.config import Settings, load_settings
from mailproxy.domain.access import ADMIN
from mailproxy.domain.errors import InvalidInput, StorageError
from mailproxy.entrypoints.cli import app
from mailproxy.entrypoints.instances import Instance
from mailproxy.service import MailProxy
from tests.conftest import fresh_postgres_database

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()

SECRETS = {
    "smtp password": "smtp-pass-at-rest-1",
    "bounce mailbox password": "imap-pass-at-rest-7",
    "callback token": "cb-token-at-rest-2",
    "callback password": "cb-pass-at-rest-3",
    "webhook secret": "whsec-at-rest-4",
    "previous webhook secret": "whsec-previous-at-rest-5",
    "answer body": "api-key-in-an-answer-6",
}


def settings_for(database: str, key: str | None = None) -> Settings:
    environ = {"GMP_DB_PATH": database}
    if key is not None:
        environ["GMP_SECURITY_ENCRYPTION_KEY"] = key
    return load_settings(environ=environ)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or a fresh database on the local PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "secrets.db")
        return
    with fresh_postgres_database("mailproxy_secrets") as url:
        yield url


def stored_bytes(database: str) -> bytes:
    """Everything the database holds: the SQLite file and its WAL as bytes, or every row
    of every PostgreSQL table (bytea as bytes, the rest as text)."""
    if "://" not in database:
        files = [Path(database), Path(database + "-wal")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    chunks: list[bytes] = []
    with psycopg.connect(database) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        assert tables
        for (table,) in tables:
            query = psycopg.sql.SQL("SELECT * FROM {}").format(psycopg.sql.Identifier(table))
            for row in conn.execute(query):
                for value in row:
                    chunks.append(value if isinstance(value, bytes) else str(value).encode())
    return b"\n".join(chunks)


def wal_size(database: str) -> int:
    return Path(database + "-wal").stat().st_size


def readable(database: str) -> list[str]:
    data = stored_bytes(database)
    return [name for name, secret in SECRETS.items() if secret.encode() in data]


async def write_secrets(proxy: MailProxy) -> None:
    """A tenant with every kind of secret, an SMTP account with a password and an
    idempotency record whose answer holds a secret."""
    await proxy.create_tenant({
        "id": "acme", "client_base_url": "https://app.example.com",
        "client_auth": {"method": "bearer", "token": SECRETS["callback token"]},
        "webhook_secret": SECRETS["webhook secret"],
    })  # fmt: skip
    tenant = await proxy.get_tenant("acme")
    await proxy.put_tenant(
        msgspec.structs.replace(tenant, webhook_secret_previous=SECRETS["previous webhook secret"])
    )
    await proxy.put_tenant({
        "id": "basic", "client_auth": {
            "method": "basic", "user": "u", "password": SECRETS["callback password"]},
    })  # fmt: skip
    await proxy.put_account({
        "id": "main", "tenant_id": "acme", "host": "smtp.example.com", "port": 587,
        "user": "app", "password": SECRETS["smtp password"],
        "bounce_mailbox": {
            "host": "imap.example.com", "user": "bounces",
            "password": SECRETS["bounce mailbox password"],
        },
    })  # fmt: skip
    # A rejected message's id comes back in the stored result, and in no other row.
    result = await proxy.submit_once(
        [{"id": SECRETS["answer body"], "tenant_id": "nobody"}],
        caller=ADMIN, idempotency_key="idem-1", fingerprint="fp",
    )  # fmt: skip
    assert [r.id for r in result.rejected] == [SECRETS["answer body"]]


async def assert_secrets_read_back(proxy: MailProxy) -> None:
    acme = await proxy.get_tenant("acme")
    assert acme.client_auth.token == SECRETS["callback token"]
    assert acme.webhook_secret == SECRETS["webhook secret"]
    assert acme.webhook_secret_previous == SECRETS["previous webhook secret"]
    assert (await proxy.get_tenant("basic")).client_auth.password == SECRETS["callback password"]
    (account,) = await proxy.list_accounts("acme")
    assert account.password == SECRETS["smtp password"]
    assert account.bounce_mailbox.password == SECRETS["bounce mailbox password"]

    # Same key and fingerprint, no messages: only a replay can name the rejected one.
    replay = await proxy.submit_once([], caller=ADMIN, idempotency_key="idem-1", fingerprint="fp")
    assert [r.id for r in replay.rejected] == [SECRETS["answer body"]]


async def test_with_a_key_no_secret_can_be_read_in_the_database(database):
    settings = settings_for(database, KEY_A)
    async with build_proxy(settings, run_dispatcher=False) as proxy:
        await write_secrets(proxy)
        if "://" not in database:
            assert wal_size(database) > 0  # the WAL is scanned too
        assert readable(database) == []
        await assert_secrets_read_back(proxy)
    assert readable(database) == []
    async with build_proxy(settings, run_dispatcher=False) as proxy:
        await assert_secrets_read_back(proxy)


async def test_plaintext_written_without_a_key_keeps_working_and_rotate_key_seals_it(database):
    async with build_proxy(settings_for(database), run_dispatcher=False) as proxy:
        await write_secrets(proxy)
    assert "smtp password" in readable(database)  # no key: stored as given
    with_key = settings_for(database, KEY_A)
    await check_storage(with_key)
    async with build_proxy(with_key, run_dispatcher=False) as proxy:
        await assert_secrets_read_back(proxy)
    count = await reseal_secrets(with_key)
    assert (count.tenants, count.accounts, count.secrets) == (2, 1, 6)
    # The idempotent answer, stored before the key, expires with its record (a day).
    assert readable(database) == ["answer body"]
    async with build_proxy(with_key, run_dispatcher=False) as proxy:
        await assert_secrets_read_back(proxy)


async def test_a_new_first_key_reads_the_old_one_and_rotate_key_moves_everything_to_it(
    database,
):
    async with build_proxy(settings_for(database, KEY_A), run_dispatcher=False) as proxy:
        await write_secrets(proxy)
    both = settings_for(database, f"{KEY_B}, {KEY_A}")
    async with build_proxy(both, run_dispatcher=False) as proxy:
        await assert_secrets_read_back(proxy)
    await reseal_secrets(both)
    await check_storage(settings_for(database, KEY_B))
    with pytest.raises(StorageError, match=r"security\.encryption_key"):
        await check_storage(settings_for(database, KEY_A))
    assert readable(database) == []


async def test_encrypted_secrets_without_the_key_or_with_a_wrong_one_stop_start_up(database):
    async with build_proxy(settings_for(database, KEY_A), run_dispatcher=False) as proxy:
        await write_secrets(proxy)
    with pytest.raises(StorageError, match=r"security\.encryption_key is not set"):
        await check_storage(settings_for(database))
    with pytest.raises(StorageError, match=r"cannot be decrypted with security\.encryption_key"):
        await check_storage(settings_for(database, KEY_B))
    await check_storage(settings_for(database, KEY_A))


@pytest.mark.parametrize(
    ("value", "where"),
    [
        pytest.param("not-a-fernet-key", "the key", id="not-a-key"),
        pytest.param(f"{KEY_A},short", "key 2 of 2", id="second-key-short"),
        pytest.param(" , ", "no key", id="only-commas"),
    ],
)
def test_a_malformed_key_is_refused_naming_the_setting_and_never_echoed(value, where):
    with pytest.raises(InvalidInput) as caught:
        load_settings(environ={"GMP_SECURITY_ENCRYPTION_KEY": value})
    assert caught.value.field == "security.encryption_key"
    assert where in str(caught.value)
    assert "short" not in str(caught.value)
    assert "not-a-fernet-key" not in str(caught.value)


async def with_proxy(settings: Settings, steps: Any) -> None:
    async with build_proxy(settings, run_dispatcher=False) as proxy:
        await steps(proxy)


def serve_exit(tmp_path: Path, environ: dict[str, str]) -> tuple[int, str]:
    env = {"PATH": "/usr/bin:/bin", "GMP_API_TOKEN": "t" * 32, **environ}
    done = subprocess.run(
        [sys.executable, "-c", "from mailproxy.entrypoints.cli import main; main()",
         "serve", "--port", "0"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.returncode, done.stderr


def test_serve_exits_1_with_one_line_for_a_bad_key_or_locked_secrets(tmp_path):
    database = str(tmp_path / "serve.db")
    code, err = serve_exit(
        tmp_path, {"GMP_DB_PATH": database, "GMP_SECURITY_ENCRYPTION_KEY": "not-a-fernet-key"}
    )
    assert (code, err.strip().splitlines()) == (1, [
        "error: invalid setting security.encryption_key: the key is not a Fernet key "
        "(32 url-safe base64-encoded bytes)"
    ])  # fmt: skip
    asyncio.run(with_proxy(settings_for(database, KEY_A), write_secrets))
    code, err = serve_exit(tmp_path, {"GMP_DB_PATH": database})
    lines = err.strip().splitlines()
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith("error: stored secrets are encrypted but security.encryption_key")


def test_the_rotate_key_command_seals_an_instances_secrets(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    instance = Instance(tmp_path / "home", "box")
    instance.create("127.0.0.1", 1)
    settings = load_settings(instance.config_file, environ={}, instance_name="box")
    asyncio.run(with_proxy(settings, write_secrets))
    assert "webhook secret" in readable(settings.db_path)

    assert app(["box", "rotate-key"], result_action="return_value") == 1
    assert "security.encryption_key is not set" in capsys.readouterr().err

    monkeypatch.setenv("GMP_SECURITY_ENCRYPTION_KEY", KEY_A)
    assert app(["box", "rotate-key", "--json"], result_action="return_value") == 0
    assert json.loads(capsys.readouterr().out) == {"tenants": 2, "accounts": 1, "secrets": 6}
    assert readable(settings.db_path) == ["answer body"]
    assert app(["box", "rotate-key"], result_action="return_value") == 0
    assert capsys.readouterr().out.startswith("re-encrypted 6 secrets (2 tenants, 1 accounts)")
    asyncio.run(with_proxy(settings_for(settings.db_path, KEY_A), assert_secrets_read_back))
