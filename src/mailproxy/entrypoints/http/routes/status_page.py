"""The read-only status page at ``/ui``: queue counts by tenant and status, throughput
of the last minutes, why waiting messages wait, paused accounts, the last failures,
report backlogs, suppressed addresses per tenant, and the bounce mailboxes with the
latest bounce messages nobody could read. Server-rendered HTML, no script; it reloads
itself every 30 seconds, and fits a phone as well as a desk (tables scroll inside their
own box).

Admin only: the admin token in ``X-API-Token``, or the session cookie that the
``/ui/login`` form sets (see :class:`~mailproxy.entrypoints.http.auth.Sessions`: signed,
expiring, HttpOnly, SameSite=Strict, Path=/ui, Secure over https) and ``/ui/logout``
ends. Failed sign-ins and wrong header tokens count against the client address like
failed API calls; past the limit the answer is 429 with ``Retry-After`` and the token is
not even compared.

The store reads of one page follow the number of tenants and accounts, never the number
of messages: per tenant its counts, its accounts' pauses, one page of its oldest waiting
messages (grouped by why they wait) and one of its failures; and, for all tenants, one
count of suppressed addresses and one page of unreadable bounce messages (the mailboxes'
states are in memory).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from html import escape
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body

from mailproxy.domain.model import AccountPause, MinuteCount, QueuedMessage, Status, Tenant
from mailproxy.entrypoints.http.auth import Gate, client_address
from mailproxy.service import MailProxy
from mailproxy.service.bounces import MailboxWatch, mailbox_of
from mailproxy.service.queries import WAITING_STATUSES, WaitingReasons

COOKIE = "gmp_session"
THROUGHPUT_MINUTES = 15
#: Waiting messages read per tenant and page, oldest first, to say why they wait.
WAITING_SAMPLE = 200
#: Reasons shown per tenant; the others are summed up in one row.
TOP_REASONS = 5
LAST_FAILURES = 10
#: Bounce-mailbox messages nobody could read, newest first.
LAST_UNPARSED = 20
_OUTCOMES = (Status.SENT, Status.ERROR, Status.UNKNOWN)
#: What a reason means when its messages share no cause to show.
_REASON_TEXT = {
    "queued": "due now, waiting for a free connection",
    "scheduled": "its send time (deferred_ts) is later",
}


#: The page needs nothing from elsewhere; forbid framing and any script outright.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: The longest text a table cell keeps on one line (a local time is 25 characters).
_ONE_LINE = 32
#: How an absent value and an empty queue read.
ABSENT = "\u2014"
EMPTY = "empty"


@cache
def _style() -> str:
    return Path(__file__).with_name("status_page.css").read_text(encoding="utf-8")


class _Html(str):
    """A table cell that is already HTML (built here from numbers), not text to escape."""


class _Wide(str):
    """A table cell of text that spans the rest of its row."""


def _local_time(ts: float | None, pattern: str | None = None) -> str:
    """``ts`` in the server's local time: ISO 8601 with the offset, or ``pattern``;
    :data:`ABSENT` for None."""
    if ts is None:
        return ABSENT
    moment = datetime.fromtimestamp(ts).astimezone()
    return moment.strftime(pattern) if pattern else moment.isoformat(" ", "seconds")


def _cell(value: object, span: int = 1) -> str:
    if isinstance(value, _Html):
        return f"<td>{value}</td>"
    if isinstance(value, _Wide):
        return f"<td colspan='{span}'>{escape(value)}</td>"
    if isinstance(value, int | float):
        return f"<td class='n'>{value}</td>"
    text = ABSENT if value is None else str(value)
    # Prose (an error, a reason) wraps in a column wide enough to read; ids, statuses and
    # times stay on one line.
    kind = " class='prose'" if len(text) > _ONE_LINE else ""
    return f"<td{kind}>{escape(text)}</td>"


def _page(
    title: str, body: str, status: int = 200, cookies: Sequence[Cookie] = (), head: str = ""
) -> Response[str]:
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title>{head}<style>{_style()}</style></head>"
        f"<body>{body}</body></html>"
    )
    return Response(
        html, status_code=status, media_type=MediaType.HTML, cookies=list(cookies),
        headers=_HEADERS,
    )  # fmt: skip


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> str:
    """A table in a box of its own that scrolls sideways when the screen is narrower
    (never the page); ``empty`` when there are no rows."""
    if not rows:
        return f"<p>{escape(empty)}</p>"
    numeric = [
        all(isinstance(row[i], int | float) for row in rows if i < len(row))
        for i in range(len(headers))
    ]
    head = "".join(
        f"<th class='n'>{escape(h)}</th>" if number else f"<th>{escape(h)}</th>"
        for h, number in zip(headers, numeric, strict=True)
    )
    body = "".join(
        "<tr>" + "".join(_cell(c, len(headers) - i) for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


class _TenantState(NamedTuple):
    """What the page shows of one tenant, read once per page."""

    tenant: Tenant
    counts: dict[Status, int]
    pauses: dict[str, AccountPause]
    waiting: WaitingReasons
    failures: list[QueuedMessage]


async def _read_tenant(proxy: MailProxy, tenant: Tenant) -> _TenantState:
    accounts = await proxy.list_accounts(tenant.id)
    pauses = await proxy.queries.account_pauses(tenant.id, [a.id for a in accounts])
    failed = await proxy.list_messages(tenant.id, statuses=[Status.ERROR], limit=1000)
    return _TenantState(
        tenant=tenant,
        counts=await proxy.counts(tenant.id),
        pauses=pauses,
        waiting=await proxy.queries.waiting_reasons(tenant.id, pauses, sample=WAITING_SAMPLE),
        failures=failed.messages[-LAST_FAILURES:],
    )


# --- the sections of the page, each from what was read ----------------------------------


def _queue_section(states: Sequence[_TenantState]) -> str:
    statuses = list(Status)
    rows = [
        [s.tenant.id, *(s.counts.get(status, 0) for status in statuses)]
        if any(s.counts.values())
        else [s.tenant.id, _Wide(EMPTY)]
        for s in states
    ]
    return "<h2>Queue by tenant</h2>" + _table(["tenant", *statuses], rows, "no tenants")


def _throughput(first_minute: int, counts: Sequence[MinuteCount]) -> str:
    """The per-tenant totals of the window, and the per-minute table (all tenants, a bar
    per minute, newest first)."""
    per_minute = {
        first_minute + 60 * n: dict.fromkeys(_OUTCOMES, 0) for n in range(THROUGHPUT_MINUTES)
    }
    per_tenant: dict[str, dict[Status, int]] = {}
    for count in counts:
        if count.minute_ts in per_minute:
            per_minute[count.minute_ts][count.status] += count.count
            tenant = per_tenant.setdefault(count.tenant_id, dict.fromkeys(_OUTCOMES, 0))
            tenant[count.status] += count.count
    busiest = max(sum(row.values()) for row in per_minute.values()) or 1
    minute_rows = [
        [
            _local_time(minute, "%H:%M"),
            *(row[status] for status in _OUTCOMES),
            _Html(f"<meter min='0' max='{busiest}' value='{sum(row.values())}'></meter>"),
        ]
        for minute, row in sorted(per_minute.items(), reverse=True)
    ]
    tenant_rows = [
        [
            tenant,
            *(totals[s] for s in _OUTCOMES),
            round(totals[Status.SENT] / THROUGHPUT_MINUTES, 1),
        ]
        for tenant, totals in sorted(per_tenant.items())
    ]
    return (
        f"<h2>Throughput, last {THROUGHPUT_MINUTES} minutes</h2>"
        + _table(["tenant", *_OUTCOMES, "sent per minute"], tenant_rows, "nothing finished")
        + _table(["minute", *_OUTCOMES, "finished"], minute_rows, "")
    )


def _waiting_section(states: Sequence[_TenantState]) -> str:
    """Per tenant its largest groups of waiting messages, with the reason, how many, one
    of them and the soonest next attempt; a note where only the oldest were read."""
    rows: list[list[object]] = []
    notes = []
    for state in states:
        groups = state.waiting.groups
        for group in groups[:TOP_REASONS]:
            cause = group.cause or _REASON_TEXT.get(group.reason)
            rows.append([
                state.tenant.id, group.reason, group.count, cause, group.example_id,
                _local_time(group.next_attempt_ts),
            ])  # fmt: skip
        if rest := groups[TOP_REASONS:]:
            rows.append([
                state.tenant.id, f"{len(rest)} other reasons", sum(g.count for g in rest),
                None, rest[0].example_id, None,
            ])  # fmt: skip
        if not state.waiting.complete:
            total = sum(state.counts.get(s, 0) for s in WAITING_STATUSES)
            notes.append(
                f"{state.tenant.id}: counted over its oldest {state.waiting.read} of "
                f"{total} waiting messages."
            )
    # The count before the detail: on a phone it is what shows before scrolling.
    headers = ["tenant", "reason", "messages", "detail", "example", "next attempt"]
    note = "".join(f"<p class='note'>{escape(n)}</p>" for n in notes)
    return "<h2>Why messages wait</h2>" + _table(headers, rows, EMPTY) + note


def _paused_section(states: Sequence[_TenantState], now: float) -> str:
    rows = [
        [
            s.tenant.id, pause.account_id, pause.reason, pause.failures,
            _local_time(pause.until_ts)
            + ("" if pause.until_ts > now else " (over: one message at a time)"),
        ]
        for s in states
        for pause in s.pauses.values()
    ]  # fmt: skip
    headers = ["tenant", "account", "reason", "failures", "until"]
    return "<h2>Paused accounts</h2>" + _table(headers, rows, "none")


def _failures_section(states: Sequence[_TenantState]) -> str:
    rows = [
        [s.tenant.id, m.id, m.account_id, m.error, _local_time(m.error_ts)]
        for s in states
        for m in s.failures
    ]
    headers = ["tenant", "message", "account", "error", "at"]
    return "<h2>Last failures</h2>" + _table(headers, rows, "none")


async def _reports_section(proxy: MailProxy) -> str:
    rows = [
        [tenant.id, backlog.count, state.last_error]
        for tenant, state, backlog, _ in await proxy.sync_status()
        if tenant.client_base_url
    ]
    headers = ["tenant", "waiting", "last error"]
    return "<h2>Delivery reports</h2>" + _table(headers, rows, "no tenant reports")


async def _suppression_section(proxy: MailProxy, states: Sequence[_TenantState]) -> str:
    counts = await proxy.suppressions.counts()
    rows = [[s.tenant.id, counts.get(s.tenant.id, 0)] for s in states]
    return "<h2>Suppressed addresses</h2>" + _table(["tenant", "addresses"], rows, "no tenants")


def _mailbox_state(watch: MailboxWatch) -> str:
    if watch.connected:
        return "connected"
    if watch.last_error is not None:
        return f"not connected: {watch.last_error}"
    return "connecting"


async def _bounce_mailboxes_section(proxy: MailProxy) -> str:
    """Each watched bounce mailbox (whose, whether it is connected or why not, its last
    pass, what it applied and could not read), then the latest messages nobody could
    read, left in their folder for people. Their summaries are a remote sender's text:
    escaped like every cell."""
    watches = [] if proxy.bounce_mailboxes is None else proxy.bounce_mailboxes.watches
    rows = [
        [
            w.key,
            "shared" if w.tenant_id is None else f"{w.tenant_id}/{w.account_id}",
            _mailbox_state(w), _local_time(w.last_pass_ts), w.applied, w.unparsed,
        ]
        for w in sorted(watches, key=lambda w: (w.tenant_id or "", w.account_id or "", w.key))
    ]  # fmt: skip
    headers = ["mailbox", "of", "state", "last pass", "applied", "unparsed"]
    unparsed = [
        [mailbox_of(r.mailbox), r.tenant_id or "shared", r.uid, r.summary, _local_time(r.seen_ts)]
        for r in await proxy.suppressions.unparsed(None, LAST_UNPARSED)
    ]
    return (
        "<h2>Bounce mailboxes</h2>"
        + _table(headers, rows, "none watched")
        + "<h2>Unreadable bounce messages</h2>"
        + _table(["mailbox", "of", "uid", "summary", "seen"], unparsed, "none")
    )


def _heading(now: float, signed_in_by_cookie: bool) -> str:
    sign_out = (
        "<form method='post' action='/ui/logout'>"
        "<button type='submit' id='sign-out'>Sign out</button></form>"
        if signed_in_by_cookie
        else ""
    )
    return (
        f"<header><h1>mailproxy status</h1>{sign_out}</header>"
        f"<p class='note'>As of {_local_time(now)}; this page reloads every 30 s.</p>"
    )


async def _status_body(proxy: MailProxy, signed_in_by_cookie: bool) -> str:
    now = proxy.now()
    states = [await _read_tenant(proxy, tenant) for tenant in await proxy.list_tenants()]
    return "".join([
        _heading(now, signed_in_by_cookie),
        _queue_section(states),
        _throughput(*await proxy.recent_throughput(THROUGHPUT_MINUTES)),
        _waiting_section(states),
        _paused_section(states, now),
        _failures_section(states),
        await _reports_section(proxy),
        await _suppression_section(proxy, states),
        await _bounce_mailboxes_section(proxy),
        await _refused_report_urls(proxy),
    ])  # fmt: skip


# --- who may see it ---------------------------------------------------------------------


def _throttled(retry_after_s: float) -> Response[str]:
    answer = _page("sign in", "<p>Too many failed attempts: try again later.</p>", status=429)
    answer.headers["Retry-After"] = str(math.ceil(retry_after_s))
    return answer


def _signed_in(
    request: Request[Any, Any, Any], gate: Gate
) -> Literal["token", "cookie"] | Response[str] | None:
    """How the request is the admin's — ``"token"`` (the header, or a server without a
    token), ``"cookie"`` (a live session) — or None; a 429 when the header token may not
    even be compared. Wrong header tokens count against the address like failed API
    calls."""
    if gate.admin_token is None or gate.sessions is None:
        return "token"
    token = request.headers.get("x-api-token")
    if token is not None:
        wait = gate.retry_after(client_address(request))
        if wait is not None:
            return _throttled(wait)
        if gate.is_admin_token(token):
            return "token"
        gate.failed(client_address(request))
    cookie = request.cookies.get(COOKIE)
    if cookie is not None and gate.sessions.valid(cookie, gate.proxy.now()):
        return "cookie"
    return None


def _session_cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
    return Cookie(
        key=COOKIE, value=value, max_age=max_age, httponly=True, samesite="strict", path="/ui",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def _see(location: str, cookies: Sequence[Cookie] = ()) -> Response[str]:
    return Response("", status_code=303, headers={"Location": location}, cookies=list(cookies))


# The routes are public to the API guard: they check the admin themselves.


@get("/ui", opt={"public": True}, include_in_schema=False)
async def status_page(
    request: Request[Any, Any, Any], proxy: NamedDependency[MailProxy], gate: NamedDependency[Gate]
) -> Response[str]:
    admitted = _signed_in(request, gate)
    if isinstance(admitted, Response):
        return admitted
    if admitted is None:
        return _see("/ui/login")
    return _page(
        "mailproxy status",
        await _status_body(proxy, signed_in_by_cookie=admitted == "cookie"),
        head="<meta http-equiv='refresh' content='30'>",
    )


async def _refused_report_urls(proxy: MailProxy) -> str:
    """The tenants whose report URL the egress rule refuses, so that no report of theirs
    can ever be sent: a section of its own, shown only when there is one."""
    rows = [
        [tenant.id, warning]
        for tenant in await proxy.list_tenants()
        if (warning := proxy.report_url_warning(tenant)) is not None
    ]
    if not rows:
        return ""
    return "<h2>Report URLs that cannot be called</h2>" + _table(["tenant", "why"], rows, "")


LOGIN_FORM = (
    "<h1>mailproxy</h1><form method='post' action='/ui/login' class='sign-in'>"
    "<label for='token'>Admin token</label>"
    "<input id='token' type='password' name='token' autocomplete='current-password'"
    " required autofocus>"
    "<button type='submit'>Sign in</button></form>"
    "<h2>Where the admin token is</h2><ul>"
    "<li>Configured: the <code>GMP_API_TOKEN</code> variable, or <code>api_token</code> in"
    " the <code>[server]</code> section of the config file.</li>"
    "<li>Otherwise <code>mail-proxy serve</code> made one at its first start, printed it"
    " once, and keeps it in the file <code>admin_token</code> beside its database: with"
    " the defaults, <code>./admin_token</code> in the folder it was started from.</li>"
    "<li>An instance started with <code>mail-proxy start NAME</code>:"
    " <code>mail-proxy NAME token</code> prints it (it is kept in the instance's"
    " <code>config.ini</code>).</li></ul>"
)


@get("/ui/login", opt={"public": True}, include_in_schema=False)
async def login_page() -> Response[str]:
    return _page("sign in", LOGIN_FORM)


@post("/ui/login", opt={"public": True}, include_in_schema=False, status_code=303)
async def login(
    request: Request[Any, Any, Any],
    gate: NamedDependency[Gate],
    data: Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> Response[str]:
    wait = gate.retry_after(client_address(request))
    if wait is not None:
        return _throttled(wait)
    if gate.sessions is None or not gate.is_admin_token(data.get("token", "")):
        gate.failed(client_address(request))
        return _page("sign in", "<p class='error'>Wrong token.</p>" + LOGIN_FORM, status=401)
    session = gate.sessions.issue(gate.proxy.now())
    return _see("/ui", [_session_cookie(request, session, int(gate.sessions.lifetime_s))])


@post("/ui/logout", opt={"public": True}, include_in_schema=False, status_code=303)
async def logout(request: Request[Any, Any, Any], gate: NamedDependency[Gate]) -> Response[str]:
    """End the session on the server (its cookie is refused from now on, even replayed),
    tell the browser to drop it, and go back to the sign-in form."""
    cookie = request.cookies.get(COOKIE)
    if cookie is None or gate.sessions is None:
        return _see("/ui/login")
    gate.sessions.end(cookie, gate.proxy.now())
    return _see("/ui/login", [_session_cookie(request, "", 0)])


@get("/", opt={"public": True}, include_in_schema=False)
async def front_door(request: Request[Any, Any, Any]) -> Response[Any]:
    """The service's address typed into a browser leads to the status page; any other
    client is told where things are."""
    if "text/html" in request.headers.get("accept", ""):
        return _see("/ui")
    where = {"status_page": "/ui", "api_docs": "/schema", "openapi": "/schema/openapi.json"}
    return Response({"ok": True, "service": "mailproxy", **where, "health": "/health"})


STATUS_PAGE_ROUTES = [front_door, status_page, login_page, login, logout]
