"""Settings: config.ini and GMP_ environment, validated once, errors naming the key."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mailproxy.adapters.memory import MemoryStore
from mailproxy.adapters.postgres import PostgresStore
from mailproxy.adapters.sqlite import SqliteStore
from mailproxy.bootstrap import build_proxy, build_store
from mailproxy.config import load_settings
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.retry import RetryPolicy


def write_ini(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.ini"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_match_the_documented_table():
    settings = load_settings(environ={})

    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8000
    assert settings.storage.synchronous == "full"
    assert settings.delivery.max_concurrency == 32
    assert settings.delivery.lease_s == 300
    assert settings.delivery.unknown_policy == "at_least_once"
    assert settings.delivery.max_batch == 1000
    assert settings.retry == RetryPolicy(
        base_delay_s=60, factor=2.5, max_delay_s=7200, jitter=0.1, max_retries=8, max_age_s=172800
    )


def test_the_environment_wins_over_the_file_and_relative_paths_follow_the_file(tmp_path):
    ini = write_ini(tmp_path, "[retry]\nmax_retries = 3\nbase_delay_s = 5\n[server]\nport = 9000\n")

    settings = load_settings(ini, {"GMP_RETRY_MAX_RETRIES": "4", "GMP_PORT": "9100"})

    assert settings.retry.max_retries == 4
    assert settings.retry.base_delay_s == 5
    assert settings.server.port == 9100
    assert Path(settings.db_path) == tmp_path / "mail_service.db"
    assert settings.capture_dir == tmp_path / "outbox"


@pytest.mark.parametrize(
    ("ini", "environ", "named"),
    [
        ("[nonsense]\nx = 1\n", {}, "[nonsense]"),
        ("[retry]\nmax_retrys = 3\n", {}, "retry.max_retrys"),
        ("", {"GMP_RETRY_MAX_RETRYS": "3"}, "GMP_RETRY_MAX_RETRYS"),
        ("[retry]\nmax_retries = many\n", {}, "retry.max_retries"),
        ("[retry]\njitter = 2\n", {}, "retry.jitter"),
        ("", {"GMP_REPORTING_GATHER_S": "-1"}, "reporting.gather_s"),
        ("", {"GMP_STORAGE_MAX_SIZE_MB": "0"}, "storage.max_size_mb"),
        ("", {"GMP_STORAGE_BUSY_TIMEOUT_S": "-1"}, "storage.busy_timeout_s"),
        ("[delivery]\nmax_concurrency = 0\n", {}, "delivery.max_concurrency"),
        ("[storage]\nsynchronous = sometimes\n", {}, "storage.synchronous"),
        ("", {"GMP_PORT": "70000"}, "server.port"),
        ("not an ini file", {}, "config.ini"),
    ],
)
def test_a_bad_setting_is_an_error_naming_it(tmp_path, ini, environ, named):
    path = write_ini(tmp_path, ini)

    with pytest.raises(InvalidInput) as caught:
        load_settings(path, environ)

    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        ({"GMP_LOGGING_FORMAT": "xml"},
         "invalid GMP_LOGGING_FORMAT (logging.format): 'xml' (expected one of: auto, console, "
         "json)"),
        ({"GMP_STORAGE_SYNCHRONOUS": "off"},
         "invalid GMP_STORAGE_SYNCHRONOUS (storage.synchronous): 'off' (expected one of: "
         "full, normal)"),
    ],
)  # fmt: skip
def test_a_setting_outside_its_choices_lists_them(environ, reason):
    with pytest.raises(InvalidInput) as caught:
        load_settings(environ=environ)

    assert caught.value.reason == reason


@pytest.mark.parametrize("variable", ["GMP_PORT", "GMP_SERVER_PORT"])
def test_a_bad_value_from_the_environment_names_the_variable_set(tmp_path, variable):
    with pytest.raises(InvalidInput) as caught:
        load_settings(environ={variable: "abc"})
    assert caught.value.reason == f"invalid {variable} (server.port): Expected int, got str"

    with pytest.raises(InvalidInput) as caught:  # from the file: the file's words
        load_settings(write_ini(tmp_path, "[server]\nport = abc\n"), {})
    assert caught.value.reason == "invalid setting server.port: Expected int, got str"


def test_a_config_file_that_cannot_be_read_is_one_line_without_repeats(tmp_path):
    missing = tmp_path / "nosuch.ini"
    with pytest.raises(InvalidInput) as caught:
        load_settings(missing, {})
    assert str(caught.value) == f"no config file {missing}"

    headless = write_ini(tmp_path, "port = 8080\n")
    with pytest.raises(InvalidInput) as caught:
        load_settings(headless, {})
    assert str(caught.value) == (
        f"cannot read config file {headless}: line 1: 'port = 8080' comes before any "
        "[section] header"
    )


def test_gmp_home_belongs_to_the_cli_and_other_variables_are_ignored():
    settings = load_settings(environ={"GMP_HOME": "/somewhere", "HOME": "/root"})

    assert settings.instance_name == "default"


def test_bootstrap_builds_the_store_the_path_names(tmp_path):
    assert isinstance(build_store(load_settings(environ={"GMP_DB_PATH": ":memory:"})), MemoryStore)
    sqlite = build_store(load_settings(environ={"GMP_DB_PATH": str(tmp_path / "x.db")}))
    assert isinstance(sqlite, SqliteStore)
    postgres = build_store(load_settings(environ={"GMP_DB_PATH": "postgresql://localhost/db"}))
    assert isinstance(postgres, PostgresStore)
    assert postgres.dsn == "postgresql://localhost/db"
    with pytest.raises(InvalidInput, match="mysql://"):
        build_store(load_settings(environ={"GMP_DB_PATH": "mysql://localhost/db"}))
    conninfo = "host=127.0.0.1 port=5432 dbname=mail user=postgres"
    with pytest.raises(InvalidInput, match="must be a postgresql:// URL"):
        build_store(load_settings(environ={"GMP_DB_PATH": conninfo}))


async def test_a_proxy_built_from_settings_delivers_to_its_capture_folder(tmp_path):
    settings = load_settings(environ={"GMP_DB_PATH": str(tmp_path / "db" / "mail.db")})

    async with build_proxy(settings, run_dispatcher=False) as proxy:
        await proxy.put_tenant({"id": "t"})
        await proxy.put_account({"id": "a", "tenant_id": "t", "kind": "capture"})
        await proxy.send(
            {"id": "m", "from": "s@example.com", "to": "r@example.com", "subject": "s"},
            tenant_id="t",
        )
        assert await proxy.run_until_idle() == 1

    assert (tmp_path / "db" / "outbox" / "t" / "a" / "m.eml").is_file()


def test_message_limits_come_from_the_delivery_section(tmp_path):
    settings = load_settings(
        environ={
            "GMP_DB_PATH": ":memory:",
            "GMP_DELIVERY_MAX_RECIPIENTS": "2",
            "GMP_DELIVERY_MAX_METADATA_DEPTH": "1",
        }
    )
    limits = build_proxy(settings, run_dispatcher=False).limits.message_limits
    assert (limits.max_recipients, limits.max_metadata_depth, limits.max_headers) == (2, 1, 50)


def test_worker_ids_are_stable_on_sqlite_and_per_process_on_postgresql():
    sqlite = load_settings(environ={"GMP_DB_PATH": "/data/mail.db"})
    assert sqlite.worker_id == f"{socket.gethostname()}:default"
    shared = load_settings(environ={"GMP_DB_PATH": "postgresql://db.example/mail"})
    assert shared.worker_id == f"{socket.gethostname()}:default:{os.getpid()}"
    named = {"GMP_DB_PATH": "postgresql://db.example/mail", "GMP_DELIVERY_WORKER_ID": "node-1"}
    assert load_settings(environ=named).worker_id == "node-1"


def test_the_transaction_deadline_leaves_room_for_a_slow_but_steady_server():
    with pytest.raises(InvalidInput, match="transaction_timeout_s: at least"):
        load_settings(environ={"GMP_DELIVERY_TRANSACTION_TIMEOUT_S": "100"})  # < 10 + 120
    settings = load_settings(
        environ={"GMP_DELIVERY_TRANSACTION_TIMEOUT_S": "60", "GMP_DELIVERY_DATA_TIMEOUT_S": "30"}
    )
    assert settings.delivery.transaction_timeout_s == 60
