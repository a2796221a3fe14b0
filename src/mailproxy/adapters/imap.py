"""IMAP bounce mailbox (aioimaplib): one folder read over IMAP4rev1, its processed
messages moved to another folder or flagged.

Mailbox hosts are untrusted like SMTP account hosts (a tenant may set them): the host is
resolved once, every address must pass the egress rule, and the connection goes to an
address that was checked — aioimaplib's protocol is run on that socket — while TLS
verifies the certificate against the host *name*. TLS modes: ``"implicit"`` (IMAPS, port
993), ``"starttls"`` (required: a server that does not offer it is refused before the
password is sent) and ``"none"`` (loopback, or the operator's choice).

Setting aside, per RFC 6851 where the server has ``MOVE``: ``UID MOVE`` to the processed
folder (created when missing); otherwise ``UID COPY``, ``\\Deleted`` and ``UID EXPUNGE``
(RFC 4315 ``UIDPLUS``; a plain ``EXPUNGE`` without it, which also removes any message
another client marked deleted in that folder). Without a processed folder, the messages
get the keyword ``$MailProxyProcessed`` and ``\\Seen``, and :meth:`ImapSession.uids`
searches ``UNKEYWORD $MailProxyProcessed``. A folder whose ``PERMANENTFLAGS`` keep neither
that keyword nor new keywords (``\\*``) is refused at :meth:`ImapMailbox.open` rather than
falling back to a system flag such as ``\\Flagged``, which people set and clear by hand:
such a mailbox needs a processed folder. Messages marked ``\\Deleted`` are never listed.

Every failure — unreachable, TLS, refused login, a ``NO``/``BAD`` answer, no answer in
time, the connection lost — is :class:`~mailproxy.domain.errors.MailboxUnavailable` with a
one-line reason (server text shortened and stripped of control characters, never the
password). After one, the session is finished: close it and open another.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import socket
import ssl
from collections.abc import Awaitable, Sequence
from typing import Any, Literal

import aioimaplib

from mailproxy.adapters.resolver import (
    EgressRefused,
    ThreadedResolver,
    Unresolved,
    connect_first,
    pinned_addresses,
)
from mailproxy.domain.egress import Network, address_literal
from mailproxy.domain.errors import InvalidInput, MailboxUnavailable
from mailproxy.ports.resolver import Resolver

TlsMode = Literal["implicit", "starttls", "none"]
TLS_MODES: tuple[TlsMode, ...] = ("implicit", "starttls", "none")
#: The keyword that marks a processed message when there is no processed folder.
PROCESSED_KEYWORD = "$MailProxyProcessed"
#: RFC 2177 §3: a client re-issues IDLE at least every 29 minutes, or the server may
#: log it out as idle; a longer wait returns then (new mail *may* have come).
_IDLE_LIMIT_S = 29 * 60.0
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]", re.IGNORECASE)
_PERMANENTFLAGS = re.compile(rb"\[PERMANENTFLAGS \(([^)]*)\)\]", re.IGNORECASE)
_READ_ONLY = re.compile(rb"\[READ-ONLY\]", re.IGNORECASE)
_PUSHED_NEWS = re.compile(rb"^\d+ (EXISTS|RECENT)$", re.IGNORECASE)
_LITERAL_BODY = re.compile(rb"BODY\[\](<0>)? \{\d+\}$", re.IGNORECASE)
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")
_REASON_LIMIT = 200
#: The longest answer line without its end (a SEARCH of ~100,000 UIDs fits), and the
#: largest literal above the partial fetch's size: a server that sends more is cut off.
MAX_LINE_BYTES = 1024 * 1024
_LITERAL_SLACK = 64 * 1024
_LITERAL_SIZE = re.compile(rb"\{(\d+)\}\r\n")


class _BoundedProtocol(aioimaplib.IMAP4ClientProtocol):  # type: ignore[misc]
    """aioimaplib's protocol, with bounds on what a server may make it hold.

    Its reader joins each partial line with the next chunk, so a line that never ends
    costs memory without bound and time that grows with the square of its length, all
    on the event loop; and it buffers a literal of whatever size the server announces.
    A tenant names the server: a line longer than :data:`MAX_LINE_BYTES`, or a literal
    announced larger than ``max_literal``, closes the connection instead (the session
    then fails as unavailable, and the poller retries later)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, lost: Any, max_literal: int) -> None:
        super().__init__(loop, lost)
        self._max_literal = max_literal

    def data_received(self, d: bytes) -> None:
        head = self.incomplete_line[-24:] + d[:64]  # an announcement split by the chunks
        for match in (*_LITERAL_SIZE.finditer(d), *_LITERAL_SIZE.finditer(head)):
            if int(match[1]) > self._max_literal:
                self.transport.abort()
                return
        super().data_received(d)
        if len(self.incomplete_line) > MAX_LINE_BYTES:
            self.transport.abort()


def mailbox_name(name: str) -> str:
    """``name`` as an IMAP mailbox name: modified UTF-7 (RFC 3501 §5.1.3), quoted."""
    encoded: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be")
            encoded.append("&" + base64.b64encode(utf16).decode().rstrip("=").replace("/", ","))
            encoded.append("-")
            pending.clear()

    for char in name:
        if "\x20" <= char <= "\x7e":
            flush()
            encoded.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return str(aioimaplib.quoted("".join(encoded)))


def _server_text(line: object) -> str:
    """An answer's text, fit for a one-line reason: printable ASCII, shortened."""
    raw = bytes(line) if isinstance(line, bytes | bytearray) else str(line).encode()
    text = _NOT_PRINTABLE.sub(" ", raw.decode("ascii", "replace")).strip()
    return text[:_REASON_LIMIT] + ("…" if len(text) > _REASON_LIMIT else "")


def _described(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return f"connection failed: {exc.strerror or exc}"
    return _server_text(f"{type(exc).__name__}: {exc}".rstrip(": "))


class ImapMailbox:
    """Implements :class:`~mailproxy.ports.mailbox.Mailbox` over IMAP (aioimaplib).

    ``processed_folder`` None: processed messages are flagged (see the module docstring).
    ``tls_verify`` False accepts any certificate; ``ca_file`` replaces the system's CAs
    (as for SMTP accounts). ``egress_allow`` and ``resolve`` are the egress rule's, as for
    :class:`~mailproxy.adapters.smtp.SmtpTransport`; ``scope`` is the tenant on whose
    behalf the host is resolved (None: the service's own mailbox).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        tls: TlsMode = "implicit",
        folder: str = "INBOX",
        processed_folder: str | None = None,
        tls_verify: bool = True,
        ca_file: str | None = None,
        egress_allow: Sequence[Network] = (),
        resolve: Resolver | None = None,
        scope: str | None = None,
        connect_timeout_s: float = 10.0,
        command_timeout_s: float = 30.0,
        poll_interval_s: float = 30.0,
        max_fetch_bytes: int = 2 * 1024 * 1024,
    ) -> None:
        if tls not in TLS_MODES:
            raise InvalidInput("tls", f"tls must be one of {', '.join(TLS_MODES)}")
        if processed_folder is not None and processed_folder == folder:
            raise InvalidInput("processed_folder", "processed_folder must differ from folder")
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self.tls: TlsMode = tls
        self.folder = folder
        self.processed_folder = processed_folder
        self.tls_verify = tls_verify
        self.ca_file = ca_file
        self._allow = tuple(egress_allow)
        self._resolve: Resolver = resolve if resolve is not None else ThreadedResolver()
        self._scope = scope
        self.max_fetch_bytes = max_fetch_bytes
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.poll_interval_s = poll_interval_s

    @property
    def key(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"

    def unavailable(self, reason: str) -> MailboxUnavailable:
        """The error for ``reason``, the password blanked should a server echo it."""
        if self._password:
            reason = reason.replace(self._password, "***")
        return MailboxUnavailable(self.key, reason)

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file)
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @property
    def server_name(self) -> str:
        """The name the certificate must carry: the host as configured (an address
        literal without its brackets)."""
        return address_literal(self.host) or self.host

    async def open(self) -> ImapSession:
        sock = await self._connected_socket()
        session = ImapSession(self, asyncio.get_running_loop())
        try:
            await session.start(sock)
        except BaseException:
            await session.close()
            sock.close()  # when no transport took it over
            raise
        return session

    async def _connected_socket(self) -> socket.socket:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                addresses = await pinned_addresses(
                    self.host, self.port, self._allow, self._resolve, self._scope
                )
                return await connect_first(addresses, self.port)
        except (EgressRefused, Unresolved) as exc:
            raise self.unavailable(str(exc)) from None
        except TimeoutError:
            raise self.unavailable(f"no connection within {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise self.unavailable(_described(exc)) from None

    @property
    def password(self) -> str:
        return self._password


class ImapSession:
    """Implements :class:`~mailproxy.ports.mailbox.MailboxSession`: one connection with
    the folder selected (made by :meth:`ImapMailbox.open`)."""

    def __init__(self, mailbox: ImapMailbox, loop: asyncio.AbstractEventLoop) -> None:
        self._mailbox = mailbox
        self._loop = loop
        self._lost = asyncio.Event()
        self._protocol: Any = _BoundedProtocol(
            loop, self._connection_lost, mailbox.max_fetch_bytes + _LITERAL_SLACK
        )
        self._transport: asyncio.Transport | None = None
        self._uidvalidity = 0
        self._broken: str | None = None
        self._closed = False
        self._folder_checked = False
        #: UIDs from here up are mail the session has not listed yet (UIDs ascend).
        self._unlisted_from = 0

    def _connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    @property
    def capabilities(self) -> frozenset[str]:
        """The server's capabilities, as last announced (upper case)."""
        return frozenset(c.upper() for c in self._protocol.capabilities)

    # --- running commands ------------------------------------------------------------

    async def _settle(self, what: str, call: Awaitable[Any], timeout_s: float) -> Any:
        """Await ``call`` for at most ``timeout_s``: its result, or ``_TIMED_OUT``.
        Ends early with :class:`MailboxUnavailable` when the connection is lost."""
        if self._broken is not None:
            if asyncio.iscoroutine(call):
                call.close()
            raise self._mailbox.unavailable(self._broken)
        task = asyncio.ensure_future(call)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
        if task in done:
            try:
                return task.result()
            except (aioimaplib.AioImapException, OSError, ValueError) as exc:
                raise self._fail(f"{what}: {_described(exc)}") from None
        if self._lost.is_set():
            raise self._fail(f"connection lost during {what}")
        return _TIMED_OUT

    async def _run(self, what: str, call: Awaitable[Any], timeout_s: float | None = None) -> Any:
        """Run one aioimaplib call within the command timeout (every failure:
        :class:`MailboxUnavailable`, and the session is finished)."""
        limit = timeout_s if timeout_s is not None else self._mailbox.command_timeout_s
        result = await self._settle(what, call, limit)
        if result is _TIMED_OUT:
            raise self._fail(f"no answer to {what} within {limit:g} s")
        return result

    async def _ok(self, what: str, call: Awaitable[Any]) -> Any:
        """:meth:`_run`, and an answer other than ``OK`` is a failure saying what the
        server said."""
        response = await self._run(what, call)
        if response.result != "OK":
            raise self._mailbox.unavailable(f"{what} refused: {_answer_text(response)}")
        return response

    def _fail(self, reason: str) -> MailboxUnavailable:
        self._broken = self._broken or reason
        return self._mailbox.unavailable(reason)

    # --- opening -----------------------------------------------------------------------

    async def start(self, sock: socket.socket) -> None:
        """Greeting, TLS, login, and the folder selected."""
        mailbox = self._mailbox
        implicit = mailbox.tls == "implicit"
        connected = self._loop.create_connection(
            lambda: self._protocol,
            sock=sock,
            ssl=mailbox.tls_context() if implicit else None,
            server_hostname=mailbox.server_name if implicit else None,
            ssl_handshake_timeout=mailbox.connect_timeout_s if implicit else None,
        )
        self._transport, _ = await self._run(
            "TLS handshake" if implicit else "connect", connected, mailbox.connect_timeout_s
        )
        await self._run("greeting", self._protocol.wait("AUTH|NONAUTH"), mailbox.connect_timeout_s)
        if mailbox.tls == "starttls":
            await self._start_tls()
        if self._protocol.state != aioimaplib.AUTH:
            login = self._protocol.login(aioimaplib.quoted(mailbox.user), mailbox.password)
            await self._ok("LOGIN", login)
        # The capabilities after login are the ones that count (RFC 3501 §6.2.3): asked
        # for rather than read from the login answer, which aioimaplib mis-splits.
        await self._run("CAPABILITY", self._protocol.capability())
        await self._select()

    async def _start_tls(self) -> None:
        if "STARTTLS" not in self.capabilities:
            raise self._fail("TLS required but the server does not offer STARTTLS")
        command = aioimaplib.Command("STARTTLS", self._protocol.new_tag(), loop=self._loop)
        await self._ok("STARTTLS", self._protocol.execute(command))
        mailbox = self._mailbox
        plain = self._transport
        assert plain is not None
        self._transport = await self._run(
            "TLS handshake",
            self._loop.start_tls(
                plain,
                self._protocol,
                mailbox.tls_context(),
                server_hostname=mailbox.server_name,
                ssl_handshake_timeout=mailbox.connect_timeout_s,
            ),
            mailbox.connect_timeout_s,
        )
        self._protocol.transport = self._transport
        # RFC 3501 §6.2.1: what the server said before TLS is forgotten.
        await self._run("CAPABILITY", self._protocol.capability())

    async def _select(self) -> None:
        mailbox = self._mailbox
        response = await self._run("SELECT", self._protocol.select(mailbox_name(mailbox.folder)))
        if response.result != "OK":
            raise self._fail(
                f"folder {mailbox.folder} cannot be selected: {_answer_text(response)}"
            )
        lines = [bytes(line) for line in response.lines if isinstance(line, bytes | bytearray)]
        if any(_READ_ONLY.search(line) for line in lines):
            raise self._fail(f"folder {mailbox.folder} is read-only")
        validity = next((m for line in lines if (m := _UIDVALIDITY.search(line))), None)
        if validity is None:
            raise self._fail(f"folder {mailbox.folder}: the server gave no UIDVALIDITY")
        self._uidvalidity = int(validity.group(1))
        uidnext = next((m for line in lines if (m := _UIDNEXT.search(line))), None)
        self._unlisted_from = int(uidnext.group(1)) if uidnext else 0
        if mailbox.processed_folder is None:
            permanent = next((m for line in lines if (m := _PERMANENTFLAGS.search(line))), None)
            # RFC 3501 §7.1: without PERMANENTFLAGS, every flag is permanent.
            kept = permanent.group(1).decode("ascii", "replace").split() if permanent else None
            if kept is not None and "\\*" not in kept and PROCESSED_KEYWORD not in kept:
                raise self._fail(
                    f"folder {mailbox.folder} does not keep the keyword {PROCESSED_KEYWORD}: "
                    "configure a processed folder for this mailbox"
                )

    # --- the port ------------------------------------------------------------------------

    def _unprocessed(self) -> tuple[str, ...]:
        if self._mailbox.processed_folder is None:
            return ("UNDELETED", "UNKEYWORD", PROCESSED_KEYWORD)
        return ("UNDELETED",)

    async def _search(self, *criteria: str) -> list[int]:
        response = await self._ok(
            "UID SEARCH", self._protocol.search(*criteria, charset=None, by_uid=True)
        )
        found: set[int] = set()
        for line in response.lines[:-1]:
            words = bytes(line).split() if isinstance(line, bytes | bytearray) else []
            if words and all(word.isdigit() for word in words):
                found.update(int(word) for word in words)
        return sorted(found)

    async def _new_mail_known(self) -> None:
        """NOOP: a server tells of new mail (EXISTS) between commands, and a message it
        has not told of yet is in no search result (RFC 3501 §5.2, §6.1.2)."""
        await self._ok("NOOP", self._protocol.simple_command("NOOP"))

    async def uids(self) -> list[int]:
        await self._new_mail_known()
        listed = await self._search(*self._unprocessed())
        if listed:
            self._unlisted_from = max(self._unlisted_from, listed[-1] + 1)
        return listed

    async def _unlisted(self) -> bool:
        """Whether mail arrived that :meth:`uids` did not list yet. (``N:*`` always
        matches the last message, hence the comparison.)"""
        await self._new_mail_known()
        since = f"{max(self._unlisted_from, 1)}:*"
        found = await self._search("UID", since, *self._unprocessed())
        return any(uid >= self._unlisted_from for uid in found)

    async def fetch(self, uid: int) -> bytes | None:
        # Only the first octets (RFC 3501 partial fetch): a bounce is small, the parser
        # reads no further, and a huge message in the folder is not loaded whole.
        part = f"BODY.PEEK[]<0.{self._mailbox.max_fetch_bytes}>"
        response = await self._ok("UID FETCH", self._protocol.fetch(str(uid), part, by_uid=True))
        lines = response.lines
        for index, line in enumerate(lines[:-1]):
            if (
                isinstance(line, bytes)
                and _LITERAL_BODY.search(line)
                and isinstance(lines[index + 1], bytearray)
            ):
                return bytes(lines[index + 1])
        return None

    async def set_aside(self, uids: Sequence[int]) -> None:
        if not uids:
            return
        # Only those still here and not set aside: the commands below then never meet a
        # UID that is gone, whatever a server would answer to one.
        wanted = ",".join(str(uid) for uid in sorted(set(uids)))
        present = await self._search("UID", wanted, *self._unprocessed())
        if not present:
            return
        uid_set = ",".join(str(uid) for uid in present)
        protocol = self._protocol
        target = self._mailbox.processed_folder
        if target is None:
            flags = f"({PROCESSED_KEYWORD} \\Seen)"
            await self._ok(
                "UID STORE", protocol.store(uid_set, "+FLAGS.SILENT", flags, by_uid=True)
            )
            return
        created = await self._create_processed_folder(target)
        name = mailbox_name(target)
        capabilities = self.capabilities
        try:
            if "MOVE" in capabilities:
                await self._ok("UID MOVE", protocol.move(uid_set, name, by_uid=True))
                return
            await self._ok("UID COPY", protocol.copy(uid_set, name, by_uid=True))
        except MailboxUnavailable as exc:
            if created:
                raise self._mailbox.unavailable(f"{exc.reason} ({created})") from None
            raise
        await self._ok(
            "UID STORE", protocol.store(uid_set, "+FLAGS.SILENT", "(\\Deleted)", by_uid=True)
        )
        if "UIDPLUS" in capabilities:
            await self._ok("UID EXPUNGE", protocol.expunge(uid_set, by_uid=True))
        else:
            await self._ok("EXPUNGE", protocol.expunge())

    async def _create_processed_folder(self, name: str) -> str | None:
        """CREATE the processed folder once per session. Its refusal is not a failure
        (usually: it exists; RFC 5530 ``ALREADYEXISTS``): what the server said, for the
        move's reason should the move fail."""
        if self._folder_checked:
            return None
        response = await self._run(
            "CREATE", self._protocol.simple_command("CREATE", mailbox_name(name))
        )
        self._folder_checked = True
        if response.result == "OK":
            return None
        return f"CREATE {name}: {_answer_text(response)}"

    async def wait(self, timeout_s: float) -> None:
        # Mail that arrived since the last listing, and whose announcement went to an
        # earlier command, would not be announced again during IDLE.
        if await self._unlisted():
            return
        if "IDLE" not in self.capabilities:
            deadline = self._loop.time() + timeout_s
            while (remaining := deadline - self._loop.time()) > 0:
                await asyncio.sleep(min(remaining, self._mailbox.poll_interval_s))
                if await self._unlisted():
                    return
            return
        if not self._news_left():
            await self._idle(min(timeout_s, _IDLE_LIMIT_S))

    async def _idle(self, timeout_s: float) -> None:
        """IDLE (RFC 2177) until the server announces new mail or ``timeout_s`` passed,
        then DONE."""
        protocol = self._protocol
        idle = asyncio.ensure_future(protocol.idle())
        try:
            started = asyncio.ensure_future(protocol.wait_for_idle_response())
            try:
                await self._run(
                    "IDLE", asyncio.wait({idle, started}, return_when=asyncio.FIRST_COMPLETED)
                )
            finally:
                started.cancel()
            if idle.done():  # answered without the continuation: refused
                response = await self._run("IDLE", idle)
                raise self._fail(f"IDLE refused: {_answer_text(response)}")
            deadline = self._loop.time() + timeout_s
            while (remaining := deadline - self._loop.time()) > 0:
                pushed = await self._settle("IDLE", protocol.idle_queue.get(), remaining)
                if pushed is _TIMED_OUT or _announces_news(pushed):
                    break
            protocol.idle_done()
            response = await self._run("IDLE", idle)
            if response.result != "OK":
                raise self._fail(f"IDLE ended badly: {_answer_text(response)}")
        finally:
            if not idle.done():
                if self._broken is not None:
                    idle.cancel()
                elif protocol.has_pending_idle_command():
                    # Cancelled while idling: DONE, so that the connection can still log
                    # out cleanly.
                    with contextlib.suppress(Exception):
                        protocol.idle_done()

    def _news_left(self) -> bool:
        """Whether pushes left over from the last IDLE announced new mail (consumed)."""
        news = False
        queue = self._protocol.idle_queue
        while not queue.empty():
            news = _announces_news(queue.get_nowait()) or news
        return news

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        protocol = self._protocol
        if self._transport is not None and self._broken is None and not self._lost.is_set():
            with contextlib.suppress(Exception):
                if protocol.has_pending_idle_command():
                    protocol.idle_done()
                async with asyncio.timeout(min(5.0, self._mailbox.command_timeout_s)):
                    await protocol.logout()
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
                async with asyncio.timeout(1.0):
                    await self._lost.wait()
            with contextlib.suppress(Exception):
                # A TLS shutdown the server never answered: nothing of ours is pending.
                self._transport.abort()
        self._broken = self._broken or "the session is closed"


_TIMED_OUT = object()


def _answer_text(response: Any) -> str:
    lines = getattr(response, "lines", None) or [b""]
    return _server_text(lines[-1]) or str(getattr(response, "result", "no answer"))


def _announces_news(pushed: object) -> bool:
    return isinstance(pushed, list) and any(
        isinstance(line, bytes) and _PUSHED_NEWS.match(line.strip()) for line in pushed
    )


__all__ = ["PROCESSED_KEYWORD", "TLS_MODES", "ImapMailbox", "ImapSession", "TlsMode"]
