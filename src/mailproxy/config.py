"""Settings: ``config.ini`` plus ``GMP_`` environment variables, validated once.

The environment wins over the file. Variables are ``GMP_<SECTION>_<KEY>`` (e.g.
``GMP_RETRY_BASE_DELAY_S``) plus the short forms ``GMP_API_TOKEN``, ``GMP_DB_PATH``,
``GMP_HOST``, ``GMP_PORT`` and ``GMP_LOG_LEVEL``. An unknown section, key or ``GMP_``
variable is an error that names it (``GMP_HOME`` belongs to the CLI and is ignored here).
Only :mod:`mailproxy.bootstrap` reads Settings; adapters take plain arguments.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from mailproxy.domain.access import MIN_ADMIN_TOKEN
from mailproxy.domain.configuration import check_bounce_mailbox
from mailproxy.domain.decoding import INVALID_ENUM, allowed_values, one_of
from mailproxy.domain.errors import InvalidInput
from mailproxy.domain.retry import RetryPolicy
from mailproxy.domain.throttle import ThrottlePolicy
from mailproxy.mail_settings import (
    BouncesSettings,
    PecSettings,
    SubmissionSettings,
    check_submission,
)


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class ServerSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: Address `serve` binds to.
    host: str = "127.0.0.1"
    #: Port `serve` binds to.
    port: int = 8000
    #: The admin token (8 characters at least); generated at the first start when unset.
    api_token: str | None = None
    #: Larger request bodies are refused with 413 before they are read whole.
    max_body_bytes: int = 10485760
    #: Comma-separated addresses of reverse proxies whose `X-Forwarded-For` names the
    #: client (none: the header is ignored, the connection's address is the client's).
    forwarded_allow_ips: str | None = None


class StorageSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: A SQLite file (default: `mail_service.db` in the instance folder) or a
    #: `postgresql://` URL.
    db_path: str | None = None
    #: SQLite durability: `full` survives a power loss, `normal` a process crash.
    synchronous: Literal["full", "normal"] = "full"
    #: PostgreSQL: connections per process.
    pool_size: int = 8
    #: SQLite: how long a write waits for another process's lock before failing (503).
    busy_timeout_s: float = 5.0
    #: SQLite: the most the database file may grow to (None: as the disk allows).
    max_size_mb: float | None = None


class DeliverySettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: SMTP transactions at once per process, over all accounts.
    max_concurrency: int = 32
    #: Of those, the most one tenant may hold (default: half of `max_concurrency`), so
    #: a tenant whose sends stall never takes every slot.
    tenant_concurrency: int | None = None
    #: The most `max_connections` a tenant's key may give an account (the admin token
    #: may give more).
    tenant_max_connections: int = 10
    #: The most accounts a tenant's key may create in its tenant (the admin token may
    #: create more).
    tenant_max_accounts: int = 50
    #: Seconds to connect to an SMTP server and read its greeting.
    connect_timeout_s: float = 10.0
    #: Seconds to wait for the reply to an SMTP command.
    command_timeout_s: float = 30.0
    #: Seconds to wait for the reply after the final dot of DATA (past it the outcome is
    #: `unknown`).
    data_timeout_s: float = 120.0
    #: The most one SMTP attempt may take as a whole, from connecting to the last reply,
    #: however the server spaces its answers (cut inside DATA: `unknown`); at least
    #: `connect_timeout_s + data_timeout_s`, and room for the largest message to travel.
    transaction_timeout_s: float = 600.0
    #: How long a claimed message belongs to its worker before another may take it over.
    lease_s: float = 300.0
    #: This process's name on leases (default: host name + instance name; on PostgreSQL
    #: + process id).
    worker_id: str | None = None
    #: Where `capture` accounts write `.eml` files (default: `outbox` in the instance
    #: folder).
    capture_dir: str | None = None
    #: After an attempt with no known answer: `at_least_once` retries, `at_most_once`
    #: stops (tenants may override).
    unknown_policy: Literal["at_least_once", "at_most_once"] = "at_least_once"
    #: Messages per `add-messages` request or `submit` call.
    max_batch: int = 1000
    #: Seconds of waiting that one priority step is worth.
    priority_aging_s: float = 600.0
    #: Length of the window `limit_per_minute` counts in.
    minute_window_s: float = 60.0
    #: Length of the window `limit_per_hour` counts in.
    hour_window_s: float = 3600.0
    #: Length of the window `limit_per_day` counts in.
    day_window_s: float = 86400.0
    #: Recipients (to + cc + bcc) per message.
    max_recipients: int = 100
    #: Custom headers per message.
    max_headers: int = 50
    #: Attachments per message.
    max_attachments: int = 20
    #: Size of a message's `metadata` as JSON.
    max_metadata_bytes: int = 4096
    #: Nesting depth of a message's `metadata`.
    max_metadata_depth: int = 8


class ReportingSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: Seconds between heartbeat calls to a tenant's application when nothing is to
    #: report.
    sync_interval_s: float = 300.0
    #: Report entries per call.
    batch_size: int = 500
    #: After new entries, wait this long (0-10 s) so that one call carries many.
    gather_s: float = 0.1
    #: Seconds a report call may take before it counts as failed.
    timeout_s: float = 10.0
    #: Cap of the backoff between failed report calls (it starts at 1 s and doubles).
    retry_max_delay_s: float = 300.0
    #: Final, acknowledged messages are removed after this many seconds.
    retention_s: float = 604800.0


class AttachmentsSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: Folder that relative attachment paths are read from (none: relative paths
    #: refused).
    base_dir: str | None = None
    #: Comma-separated folders absolute attachment paths may be under (default:
    #: `base_dir`).
    allowed_roots: str | None = None
    #: Instance-wide attachment endpoint for `@id` references (a tenant's own comes
    #: first).
    http_endpoint: str | None = None
    #: How to authenticate to `http_endpoint`: `none`, `bearer` or `basic`.
    http_auth_method: Literal["none", "bearer", "basic"] | None = None
    #: The bearer token, or `user:password` for basic.
    http_auth_token: str | None = None
    #: Largest single attachment.
    max_bytes: int = 26214400
    #: Largest total of one message's attachments.
    max_total_bytes: int = 36700160
    #: Seconds to fetch one attachment.
    fetch_timeout_s: float = 30.0
    #: Attachments kept in the memory cache.
    cache_memory_max_items: int = 100
    #: Size of the memory cache.
    cache_memory_max_mb: float = 50.0
    #: Folder of the disk cache for larger attachments (none: no disk cache).
    cache_disk_dir: str | None = None
    #: Size of the disk cache.
    cache_disk_max_mb: float = 500.0
    #: Seconds a cached attachment is kept.
    cache_ttl_s: float = 3600.0


class SecuritySettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: Fernet key that encrypts stored secrets at rest (SMTP passwords, callback
    #: credentials, webhook secrets, stored idempotent answers); several comma-separated
    #: keys rotate: the first encrypts, all decrypt (then run `mail-proxy NAME rotate-key`).
    encryption_key: str | None = None
    #: Comma-separated CIDRs that callbacks, attachment URLs and SMTP account hosts may
    #: reach besides public addresses.
    egress_allow: str | None = None
    #: Serve `/metrics` without a token (it names every tenant and account id; the
    #: default asks for the admin token).
    metrics_public: bool = False
    #: Failed authentications (API token or `/ui` sign-in) one client address may make
    #: within `auth_failure_window_s`; past them it is answered 429 without its
    #: credential being checked (0: no throttling).
    auth_max_failures: int = 10
    #: Length of the window `auth_max_failures` counts in.
    auth_failure_window_s: float = 60.0
    #: How long a `/ui` sign-in lasts.
    ui_session_s: float = 43200.0

    @property
    def encryption_keys(self) -> list[str]:
        """The keys of ``encryption_key``, the encrypting one first (none when unset)."""
        return [k.strip() for k in (self.encryption_key or "").split(",") if k.strip()]

    @property
    def auth_throttle(self) -> ThrottlePolicy:
        """How failed authentications are throttled per address (API, /ui, SMTP AUTH)."""
        return ThrottlePolicy(
            max_failures=self.auth_max_failures, window_s=self.auth_failure_window_s
        )


class LoggingSettings(_Section, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: `debug`, `info`, `warning` or `error`.
    level: Literal["debug", "info", "warning", "error"] = "info"
    #: `json`, `console` (readable lines) or `auto` (console on a terminal).
    format: Literal["json", "console", "auto"] = "auto"


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    delivery: DeliverySettings = DeliverySettings()
    retry: RetryPolicy = RetryPolicy()
    reporting: ReportingSettings = ReportingSettings()
    attachments: AttachmentsSettings = AttachmentsSettings()
    security: SecuritySettings = SecuritySettings()
    bounces: BouncesSettings = BouncesSettings()
    pec: PecSettings = PecSettings()
    submission: SubmissionSettings = SubmissionSettings()
    logging: LoggingSettings = LoggingSettings()
    #: Where relative defaults (database, outbox) live: the config file's folder, or the
    #: working directory.
    instance_dir: str = "."
    instance_name: str = "default"

    @property
    def db_path(self) -> str:
        return self.storage.db_path or str(Path(self.instance_dir) / "mail_service.db")

    @property
    def data_dir(self) -> Path:
        """The SQLite database's folder, else (PostgreSQL, memory) the instance folder:
        where ``serve`` keeps a generated admin token and capture accounts their outbox."""
        db = self.db_path
        return Path(self.instance_dir) if "://" in db or db == ":memory:" else Path(db).parent

    @property
    def capture_dir(self) -> Path:
        if self.delivery.capture_dir:
            return Path(self.delivery.capture_dir)
        return self.data_dir / "outbox"

    @property
    def on_postgres(self) -> bool:
        """``storage.db_path`` names a PostgreSQL database (a ``postgresql://`` URL)."""
        return self.db_path.startswith(("postgresql://", "postgres://"))

    @property
    def worker_id(self) -> str:
        """``delivery.worker_id``, or host and instance name: stable across restarts, so a
        restarted process settles its interrupted attempts at once. On PostgreSQL, which
        several processes share, the default adds the process id (two processes with one
        id would take each other's leases); a crashed process's leases are then settled
        by the others when they expire. Give each process a stable id of its own to have
        both."""
        if self.delivery.worker_id:
            return self.delivery.worker_id
        base = f"{socket.gethostname()}:{self.instance_name}"
        if self.on_postgres:
            return f"{base}:{os.getpid()}"
        return base


SECTIONS: dict[str, type[msgspec.Struct]] = {
    f.name: f.type for f in msgspec.structs.fields(Settings) if isinstance(f.type, type)
}
SHORT_ENV = {
    "GMP_API_TOKEN": ("server", "api_token"),
    "GMP_DB_PATH": ("storage", "db_path"),
    "GMP_HOST": ("server", "host"),
    "GMP_PORT": ("server", "port"),
    "GMP_LOG_LEVEL": ("logging", "level"),
}
CLI_ONLY_ENV = frozenset({"GMP_HOME"})


def _keys(section: str) -> set[str]:
    return {f.name for f in msgspec.structs.fields(SECTIONS[section])}


def _env_key(name: str) -> tuple[str, str]:
    if name in SHORT_ENV:
        return SHORT_ENV[name]
    rest = name.removeprefix("GMP_").lower()
    for section in SECTIONS:
        if rest.startswith(section + "_") and rest[len(section) + 1 :] in _keys(section):
            return section, rest[len(section) + 1 :]
    raise InvalidInput(name, f"unknown setting: {name}")


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    instance_name: str = "default",
) -> Settings:
    """Read ``config_file`` (if given) and the environment, validate, and return Settings.

    Raises :class:`InvalidInput` naming the offending section/key or variable (and, for
    a short admin token, where it was set).
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    instance_dir = "."
    if config_file is not None:
        path = Path(config_file)
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with path.open(encoding="utf-8") as handle:
                parser.read_file(handle)
        except FileNotFoundError:
            raise InvalidInput(str(path), f"no config file {path}") from None
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise InvalidInput(str(path), f"cannot read config file {path}: {reason}") from None
        except configparser.Error as exc:
            reason = unparsed(exc)
            raise InvalidInput(str(path), f"cannot read config file {path}: {reason}") from None
        instance_dir = str(path.parent)
        for section in parser.sections():
            if section not in SECTIONS:
                raise InvalidInput(section, f"unknown config section: [{section}]")
            for key, value in parser.items(section):
                if key not in _keys(section):
                    raise InvalidInput(f"{section}.{key}", f"unknown setting: {section}.{key}")
                raw.setdefault(section, {})[key] = value
    for name, value in environ.items():
        if not name.startswith("GMP_") or name in CLI_ONLY_ENV:
            continue
        section, key = _env_key(name)
        raw.setdefault(section, {})[key] = value
    sections: dict[str, Any] = {}
    for section, values in raw.items():
        cleaned = {k: (None if v == "" else v) for k, v in values.items()}
        try:
            sections[section] = msgspec.convert(cleaned, SECTIONS[section], strict=False)
        except msgspec.ValidationError as exc:
            text = str(exc).replace("`", "")
            field = text.rsplit("$.", 1)[-1] if "$." in text else ""
            where = f"{section}.{field}" if field else section
            message = text.split(" - at ")[0]
            allowed = allowed_values(SECTIONS[section], field)
            if allowed and message.startswith(INVALID_ENUM):
                message = f"{message.removeprefix(INVALID_ENUM)} {one_of(allowed)}"
            # Named as it was set: the variable, when the environment gave the value.
            variable = origin_of(where, config_file, environ) if field else where
            if variable.startswith("GMP_"):
                raise InvalidInput(variable, f"invalid {variable} ({where}): {message}") from None
            raise InvalidInput(where, f"invalid setting {where}: {message}") from None
    settings = Settings(**sections, instance_dir=instance_dir, instance_name=instance_name)
    _check(settings)
    check_admin_token(
        settings.server.api_token, origin_of("server.api_token", config_file, environ)
    )
    return settings


def unparsed(error: configparser.Error) -> str:
    """configparser's complaint about a file, on one line: a setting before any
    ``[section]`` header says so; the others keep its words, joined."""
    if isinstance(error, configparser.MissingSectionHeaderError):
        return f"line {error.lineno}: {error.line.strip()!r} comes before any [section] header"
    return " ".join(str(error).split())


def origin_of(
    setting: str, config_file: str | Path | None, environ: Mapping[str, str] | None = None
) -> str:
    """Where the value of ``setting`` (``server.port``) comes from, as people set it: the
    ``GMP_`` variable that gives it, else ``[server] port in FILE``, else the name itself."""
    environ = os.environ if environ is None else environ
    section, _, key = setting.partition(".")
    for name, value in environ.items():
        if name.startswith("GMP_") and name not in CLI_ONLY_ENV and value:
            with contextlib.suppress(InvalidInput):
                if _env_key(name) == (section, key):
                    return name
    return f"[{section}] {key} in {config_file}" if config_file and key else setting


def check_admin_token(token: str | None, origin: str) -> None:
    """An admin token, when one is given, has :data:`MIN_ADMIN_TOKEN` characters at least;
    the error names ``origin`` (the variable, the file) so the fix is where people look."""
    if token is not None and len(token) < MIN_ADMIN_TOKEN:
        raise InvalidInput(
            origin,
            f"{origin} is too short: {len(token)} characters, at least {MIN_ADMIN_TOKEN} "
            "(make one with: openssl rand -hex 16; or leave it unset and one is generated "
            "at the first start)",
        )


def _check(settings: Settings) -> None:
    positive = {
        "server.max_body_bytes": settings.server.max_body_bytes,
        "storage.pool_size": settings.storage.pool_size,
        "storage.busy_timeout_s": settings.storage.busy_timeout_s,
        "delivery.max_concurrency": settings.delivery.max_concurrency,
        "delivery.transaction_timeout_s": settings.delivery.transaction_timeout_s,
        "delivery.tenant_max_connections": settings.delivery.tenant_max_connections,
        "delivery.tenant_max_accounts": settings.delivery.tenant_max_accounts,
        "delivery.max_batch": settings.delivery.max_batch,
        "delivery.max_recipients": settings.delivery.max_recipients,
        "delivery.max_metadata_bytes": settings.delivery.max_metadata_bytes,
        "delivery.max_metadata_depth": settings.delivery.max_metadata_depth,
        "delivery.lease_s": settings.delivery.lease_s,
        "delivery.priority_aging_s": settings.delivery.priority_aging_s,
        "delivery.minute_window_s": settings.delivery.minute_window_s,
        "delivery.hour_window_s": settings.delivery.hour_window_s,
        "delivery.day_window_s": settings.delivery.day_window_s,
        "security.auth_failure_window_s": settings.security.auth_failure_window_s,
        "security.ui_session_s": settings.security.ui_session_s,
        "retry.base_delay_s": settings.retry.base_delay_s,
        "retry.max_delay_s": settings.retry.max_delay_s,
        "retry.factor": settings.retry.factor,
    }
    if settings.delivery.tenant_concurrency is not None:  # unset means half
        positive["delivery.tenant_concurrency"] = settings.delivery.tenant_concurrency
    if settings.storage.max_size_mb is not None:  # unset means no cap
        positive["storage.max_size_mb"] = settings.storage.max_size_mb
    for key, value in positive.items():
        if value <= 0:
            raise InvalidInput(key, f"invalid setting {key}: must be positive")
    if settings.security.auth_max_failures < 0:
        raise InvalidInput(
            "security.auth_max_failures", "invalid setting security.auth_max_failures: not negative"
        )
    if settings.retry.max_retries < 0:
        raise InvalidInput("retry.max_retries", "invalid setting retry.max_retries: not negative")
    delivery = settings.delivery
    if delivery.transaction_timeout_s < delivery.connect_timeout_s + delivery.data_timeout_s:
        raise InvalidInput(
            "delivery.transaction_timeout_s",
            "invalid setting delivery.transaction_timeout_s: at least connect_timeout_s + "
            "data_timeout_s (a slow but steady server must be able to answer the final dot)",
        )
    if not 0 <= settings.reporting.gather_s <= 10:
        raise InvalidInput("reporting.gather_s", "invalid setting reporting.gather_s: 0..10")
    if not 0 <= settings.retry.jitter <= 1:
        raise InvalidInput("retry.jitter", "invalid setting retry.jitter: 0..1")
    if not 0 < settings.server.port < 65536:
        raise InvalidInput("server.port", "invalid setting server.port: 1..65535")
    _check_encryption_keys(settings.security)
    check_submission(settings.submission, settings.server.host)
    shared = settings.bounces.mailbox()
    if shared is not None:
        if not settings.bounces.user:
            raise InvalidInput(
                "bounces.user", "invalid setting bounces.user: needed with bounces.host"
            )
        check_bounce_mailbox("bounces", shared)


def _check_encryption_keys(security: SecuritySettings) -> None:
    """Each key must be a Fernet key: 32 bytes in url-safe base64 (the key itself is
    never repeated in the message)."""
    keys = security.encryption_keys
    if security.encryption_key is not None and not keys:
        raise InvalidInput(
            "security.encryption_key", "invalid setting security.encryption_key: no key given"
        )
    for n, key in enumerate(keys, 1):
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != 32:
            where = f"key {n} of {len(keys)}" if len(keys) > 1 else "the key"
            raise InvalidInput(
                "security.encryption_key",
                f"invalid setting security.encryption_key: {where} is not a Fernet key "
                "(32 url-safe base64-encoded bytes)",
            )
