"""The SMTP listeners of one process: started beside the HTTP app, stopped gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator

from mailproxy.config import Settings
from mailproxy.entrypoints.smtp.handler import (
    SHUTTING_DOWN,
    TLS_HANDSHAKE_TIMEOUT_S,
    SubmissionHandler,
    SubmissionMetrics,
)
from mailproxy.entrypoints.smtp.session import SubmissionSession
from mailproxy.mail_settings import SubmissionSettings
from mailproxy.service import MailProxy


class SubmissionListener:
    """The SMTP listeners of one process, on sockets bound beforehand (see ``serve``)."""

    def __init__(
        self,
        proxy: MailProxy,
        settings: Settings,
        starttls_socket: socket.socket | None,
        tls_socket: socket.socket | None,
    ) -> None:
        self.handler = SubmissionHandler(proxy, settings, SubmissionMetrics(proxy))
        self.settings = settings.submission
        self.sockets = [(s, tls) for s, tls in ((starttls_socket, False), (tls_socket, True)) if s]
        self.sessions: set[SubmissionSession] = set()
        self._per_client: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        #: Sessions between DATA and its reply (a shutdown lets them finish).
        self._in_data = 0
        self._no_data = asyncio.Event()
        self._no_data.set()

    def admits(self, client: str) -> bool:
        """Whether a new connection from ``client`` may have a session: under
        ``max_sessions`` in all and ``max_sessions_per_address`` from its address."""
        return (
            len(self.sessions) < self.settings.max_sessions
            and self._per_client.get(client, 0) < self.settings.max_sessions_per_address
        )

    def opened(self, session: SubmissionSession) -> None:
        self.sessions.add(session)
        self._per_client[session.client] = self._per_client.get(session.client, 0) + 1

    def closed(self, session: SubmissionSession) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        left = self._per_client.pop(session.client, 1) - 1
        if left > 0:
            self._per_client[session.client] = left

    def data_started(self) -> None:
        self._in_data += 1
        self._no_data.clear()

    def data_ended(self) -> None:
        self._in_data -= 1
        if self._in_data == 0:
            self._no_data.set()

    async def start(self) -> None:
        aiosmtpd_log = logging.getLogger("mail.log")
        if without_login_data_warning not in aiosmtpd_log.filters:
            aiosmtpd_log.addFilter(without_login_data_warning)
        loop = asyncio.get_running_loop()
        context = tls_context(self.settings)
        for sock, implicit in self.sockets:

            def session(implicit: bool = implicit) -> SubmissionSession:
                return SubmissionSession(
                    self.handler, self, implicit_tls=implicit, tls_context=context
                )

            # On the implicit-TLS port a connection is a session only once its handshake
            # is done: until then only this timeout bounds it.
            server = await loop.create_server(
                session, sock=sock, ssl=context if implicit else None,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S if implicit else None,
            )  # fmt: skip
            self._servers.append(server)

    async def stop(self, grace_s: float) -> None:
        """Refuse new connections and transactions (421), let the transactions in DATA
        finish (up to ``grace_s``), then tell every session 421 and close it."""
        self.handler.closing = True
        for server in self._servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._no_data.wait(), grace_s)
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                await session.push(SHUTTING_DOWN)
            if session.transport is not None:
                session.transport.close()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)


def without_login_data_warning(record: logging.LogRecord) -> bool:
    """aiosmtpd warns of its own deprecated ``Session.login_data`` at every successful
    AUTH (it sets it itself): a line per session that says nothing to an operator."""
    return "login_data is deprecated" not in record.getMessage()


def tls_context(options: SubmissionSettings) -> ssl.SSLContext | None:
    """The server side of STARTTLS and implicit TLS (TLS 1.2 at least), or None without
    a certificate."""
    if options.cert_file is None or options.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(options.cert_file, options.key_file)
    return context


@contextlib.asynccontextmanager
async def submission_listening(
    proxy: MailProxy,
    settings: Settings,
    starttls_socket: socket.socket | None,
    tls_socket: socket.socket | None = None,
) -> AsyncIterator[SubmissionListener]:
    """SMTP submission on the sockets given (STARTTLS when a certificate is set, implicit
    TLS) while the block runs; the proxy must be open throughout."""
    listener = SubmissionListener(proxy, settings, starttls_socket, tls_socket)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop(grace_s=settings.delivery.data_timeout_s)
