"""Who is calling: the admin token, tenant keys, the ``/ui`` session cookie, and the
throttle of failed attempts per client address.

The admin token (compared in constant time) acts everywhere; a tenant key acts only
inside its tenant. Which routes a tenant key may use is declared per route
(:func:`~mailproxy.entrypoints.http.routing.route`, ``opt={"tenant": True}``); the others
are the admin's. :func:`authorize` is the guard of every route: it runs before the body
is read, and leaves the caller in the request state, where the ``caller`` dependency
(:func:`provide_caller`) takes it.

Failed authentication is throttled per client address (:mod:`mailproxy.domain.throttle`,
shared with the ``/ui`` sign-in): past ``security.auth_max_failures`` wrong tokens within
``security.auth_failure_window_s``, the answer is 429 with ``Retry-After`` and the token is
not checked. A missing token is no guess and does not count; neither do successes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
from collections.abc import Callable
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from mailproxy.config import Settings
from mailproxy.domain.access import (
    ADMIN,
    MIN_ADMIN_TOKEN,
    SHORT_ADMIN_TOKEN,
    Caller,
    require_admin,
    same_secret,
    scope_tenant,
)
from mailproxy.domain.errors import InvalidInput, MailProxyError
from mailproxy.domain.model import Tenant
from mailproxy.domain.throttle import FailedAuthentications
from mailproxy.service import MailProxy

log = logging.getLogger("mailproxy.http")


class Unauthorized(MailProxyError):
    """No token, or one that is not the admin token nor a live tenant key."""


class TooManyAttempts(MailProxyError):
    """Too many failed authentications from this address: try again after
    ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed authentications: retry in {math.ceil(retry_after_s)} s")
        self.retry_after_s = retry_after_s


class Sessions:
    """The ``/ui`` session cookies: ``<expires_ts>.<nonce>.<signature>``, where the nonce is
    random (two sign-ins never share a cookie, so signing one out leaves the other) and the
    signature is HMAC-SHA256 of ``<expires_ts>.<nonce>`` under a key derived from the admin
    token and a server-side secret: ``HMAC-SHA256(secret, "mailproxy-ui-session" NUL
    admin_token)``. So a cookie expires (``security.ui_session_s`` after sign-in, checked
    on the server whatever the browser keeps), is worthless once the admin token changes,
    and cannot be made from the admin token alone.

    Signing out (:meth:`end`) ends the session on the server: its cookie is refused from
    then on, even replayed, until it would have expired anyway (then it is forgotten,
    being refused for its age). The ended sessions are held by this object, so in this
    process: a sign-out does not reach other processes that accept the same cookies.

    The secret: the first ``security.encryption_key`` when one is set, else 32 random bytes
    drawn when the process starts. Several processes behind one load balancer (PostgreSQL)
    share their encryption key anyway (each decrypts what the others stored), so they
    accept each other's cookies; without a key, a restart, or a request that lands on
    another process, asks to sign in again (no security loss, an inconvenience: set
    ``security.encryption_key``, or make the balancer sticky). A random salt stored in the
    database would do the same without a key, at the cost of a store method for it.
    """

    _FORMAT = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{22})\.([0-9a-f]{64})")

    def __init__(self, admin_token: str, secret: bytes, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._key = hmac.new(
            secret, b"mailproxy-ui-session\0" + admin_token.encode(), hashlib.sha256
        ).digest()
        #: Signatures of the sessions signed out, with the instant each would expire.
        self._ended: dict[str, int] = {}

    def _signature(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float) -> str:
        """A cookie value valid for ``lifetime_s`` from ``now``."""
        payload = f"{math.ceil(now + self.lifetime_s)}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._signature(payload)}"

    def _expiry(self, value: str, now: float) -> tuple[int, str] | None:
        """The expiry and signature of a live cookie this server issued, else None."""
        parts = self._FORMAT.fullmatch(value)
        if parts is None:
            return None
        expires, nonce, signature = parts.groups()
        if not same_secret(signature, self._signature(f"{expires}.{nonce}")):
            return None
        if now >= int(expires) or signature in self._ended:
            return None
        return int(expires), signature

    def valid(self, value: str, now: float) -> bool:
        """Whether ``value`` is a cookie this server issued that has not expired at ``now``
        and was not signed out."""
        return self._expiry(value, now) is not None

    def end(self, value: str, now: float) -> bool:
        """Sign out the session of cookie ``value``: refused from now on. False when it
        was no live session (nothing to end; nothing is kept for it)."""
        live = self._expiry(value, now)
        if live is None:
            return False
        self._ended = {s: at for s, at in self._ended.items() if at > now}
        expires, signature = live
        self._ended[signature] = expires
        return True


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return connection.client.host if connection.client is not None else "unknown"


class Gate:
    """The credentials of one app: the admin token (None: ``--insecure``, everyone is the
    admin), tenant keys looked up through ``proxy``, the ``/ui`` sessions, and the failed
    attempts per address. ``on_failure`` is told of each wrong credential (``"wrong"``)
    and of each attempt refused unchecked (``"throttled"``)."""

    def __init__(
        self,
        proxy: MailProxy,
        admin_token: str | None,
        failures: FailedAuthentications,
        sessions: Sessions | None,
        on_failure: Callable[[str], None],
    ) -> None:
        if admin_token is not None and sessions is None:
            raise ValueError("an admin token needs Sessions")
        self.proxy = proxy
        self.admin_token = admin_token
        self.sessions = sessions
        self._failures = failures
        self._on_failure = on_failure

    def retry_after(self, client: str) -> float | None:
        """Seconds the client must wait before a credential of its is even compared (the
        refusal counted), or None."""
        wait = self._failures.retry_after(client, self.proxy.now())
        if wait is not None:
            self._on_failure("throttled")
        return wait

    def failed(self, client: str) -> None:
        """Count a wrong credential from ``client``."""
        self._failures.failed(client, self.proxy.now())
        self._on_failure("wrong")

    def is_admin_token(self, token: str) -> bool:
        return self.admin_token is not None and same_secret(token, self.admin_token)

    async def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
        """The caller of a request, from ``X-API-Token`` or ``Authorization: Bearer``:
        :class:`Unauthorized` without a valid one, :class:`TooManyAttempts` when its
        address is throttled."""
        token = connection.headers.get("x-api-token")
        authorization = connection.headers.get("authorization", "")
        if token is None:
            scheme, _, value = authorization.partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        if not token:
            if self.admin_token is None:
                return ADMIN  # --insecure on loopback
            if authorization.strip():  # a key sent without its scheme, or another scheme
                raise Unauthorized('Authorization needs "Bearer <key>"')
            raise Unauthorized("missing token: send X-API-Token or Authorization: Bearer")
        client = client_address(connection)
        wait = self.retry_after(client)
        if wait is not None:
            raise TooManyAttempts(wait)
        if self.is_admin_token(token):
            return ADMIN
        tenant_id = await self.proxy.tenant_of_key(token)
        if tenant_id is None:
            self.failed(client)
            raise Unauthorized("invalid token")
        return Caller(tenant_id)


def admin_token_of(settings: Settings, *, insecure: bool) -> str | None:
    """The admin token the app may run with: :class:`InvalidInput` when there is none
    and ``insecure`` is false, or when it is too short; a warning when it is short."""
    admin_token = settings.server.api_token
    if admin_token is None and not insecure:
        raise InvalidInput("server.api_token", "no admin token: set GMP_API_TOKEN")
    if admin_token is not None and len(admin_token) < MIN_ADMIN_TOKEN:
        raise InvalidInput(
            "server.api_token", f"admin token too short: at least {MIN_ADMIN_TOKEN} characters"
        )
    if admin_token is not None and len(admin_token) < SHORT_ADMIN_TOKEN:
        log.warning(
            "server.short_admin_token", extra={"advice": f"use {SHORT_ADMIN_TOKEN}+ characters"}
        )
    return admin_token


def build_gate(
    proxy: MailProxy,
    settings: Settings,
    admin_token: str | None,
    on_failure: Callable[[str], None],
) -> Gate:
    """The gate for ``settings.security``: its throttle policy, and sessions signed with
    the first encryption key (or a random secret of this process)."""
    security = settings.security
    failures = FailedAuthentications(security.auth_throttle)
    session_secret = (
        security.encryption_keys[0].encode()
        if security.encryption_keys
        else secrets.token_bytes(32)
    )
    sessions = (
        None
        if admin_token is None
        else Sessions(admin_token, session_secret, security.ui_session_s)
    )
    return Gate(proxy, admin_token, failures, sessions, on_failure)


async def authorize(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard of every route (before its body is read): public routes and the schema
    pass; the others need a token, and the admin's routes refuse tenant keys."""
    if handler.opt.get("public", False) or connection.scope["path"].startswith("/schema"):
        return
    gate: Gate = connection.app.state.gate
    caller = await gate.authenticate(connection)
    if not handler.opt.get("tenant", False):
        require_admin(caller)
    connection.state.caller = caller


def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    """The ``caller`` dependency: who the guard authenticated."""
    caller: Caller = request.state.caller
    return caller


async def tenant_in_scope(proxy: MailProxy, caller: Caller, tenant_id: str | None) -> Tenant:
    """The tenant a request acts on, read once; 404 for an admin naming a missing tenant,
    403 for a tenant key naming another."""
    return await proxy.get_tenant(scope_tenant(caller, tenant_id))


async def scoped(proxy: MailProxy, caller: Caller, tenant_id: str | None) -> str:
    """The id of :func:`tenant_in_scope`."""
    return (await tenant_in_scope(proxy, caller, tenant_id)).id
