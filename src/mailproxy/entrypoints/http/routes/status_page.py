"""The read-only status page at ``/ui``: queue counts by tenant and status, throughput
of the last minutes, paused accounts, the last failures, and report backlogs.
Server-rendered HTML, no script; it reloads itself every 30 seconds.

Admin only: the admin token in ``X-API-Token``, or the session cookie that the
``/ui/login`` form sets (see :class:`~mailproxy.entrypoints.http.auth.Sessions`: signed,
expiring, HttpOnly, SameSite=Strict, Path=/ui, Secure over https). Failed sign-ins and
wrong header tokens count against the client address like failed API calls; past the
limit the answer is 429 with ``Retry-After`` and the token is not even compared.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from html import escape
from typing import Annotated, Any

from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body

from mailproxy.domain.model import MinuteCount, Status
from mailproxy.entrypoints.http.auth import Gate, client_address
from mailproxy.service import MailProxy

COOKIE = "gmp_session"
THROUGHPUT_MINUTES = 15
_OUTCOMES = (Status.SENT, Status.ERROR, Status.UNKNOWN)
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

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}"
    "table{border-collapse:collapse;margin-bottom:2rem}"
    "th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}"
    ".n{text-align:right;font-variant-numeric:tabular-nums}h1{font-size:1.4rem}"
    "meter{width:12rem}.note{color:#666}"
)


class _Html(str):
    """A table cell that is already HTML (built here from numbers), not text to escape."""


def _cell(value: object) -> str:
    if isinstance(value, _Html):
        return f"<td>{value}</td>"
    if isinstance(value, int | float):
        return f"<td class='n'>{value}</td>"
    return f"<td>{escape('' if value is None else str(value))}</td>"


def _utc(ts: float, pattern: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(pattern, time.gmtime(ts))


def _page(
    title: str, body: str, status: int = 200, cookies: Sequence[Cookie] = (), head: str = ""
) -> Response[str]:
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"{head}<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return Response(
        html, status_code=status, media_type=MediaType.HTML, cookies=list(cookies),
        headers=_HEADERS,
    )  # fmt: skip


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> str:
    if not rows:
        return f"<p>{escape(empty)}</p>"
    numeric = [all(isinstance(row[i], int | float) for row in rows) for i in range(len(headers))]
    head = "".join(
        f"<th class='n'>{escape(h)}</th>" if number else f"<th>{escape(h)}</th>"
        for h, number in zip(headers, numeric, strict=True)
    )
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _throughput(first_minute: int, counts: Sequence[MinuteCount]) -> tuple[str, str]:
    """The per-minute table (all tenants, a bar per minute, newest first) and the
    per-tenant totals of the window."""
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
            _utc(minute, "%H:%M"),
            *(row[status] for status in _OUTCOMES),
            _Html(f"<meter min='0' max='{busiest}' value='{sum(row.values())}'></meter>"),
        ]
        for minute, row in sorted(per_minute.items(), reverse=True)
    ]
    minutes_table = _table(["minute (UTC)", *_OUTCOMES, "finished"], minute_rows, "")
    tenant_rows = [
        [
            tenant,
            *(totals[s] for s in _OUTCOMES),
            round(totals[Status.SENT] / THROUGHPUT_MINUTES, 1),
        ]
        for tenant, totals in sorted(per_tenant.items())
    ]
    tenants_table = _table(
        ["tenant", *_OUTCOMES, "sent per minute"], tenant_rows, "nothing finished"
    )
    return minutes_table, tenants_table


def _throttled(retry_after_s: float) -> Response[str]:
    answer = _page("sign in", "<p>Too many failed attempts: try again later.</p>", status=429)
    answer.headers["Retry-After"] = str(math.ceil(retry_after_s))
    return answer


def _signed_in(request: Request[Any, Any, Any], gate: Gate) -> bool | Response[str]:
    """Whether the request is the admin's; a 429 when the header token may not even be
    compared. Wrong header tokens count against the address like failed API calls."""
    if gate.admin_token is None or gate.sessions is None:
        return True
    token = request.headers.get("x-api-token")
    if token is not None:
        wait = gate.retry_after(client_address(request))
        if wait is not None:
            return _throttled(wait)
        if gate.is_admin_token(token):
            return True
        gate.failed(client_address(request))
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and gate.sessions.valid(cookie, gate.proxy.now())


# The routes are public to the API guard: they check the admin themselves.


@get("/ui", opt={"public": True}, include_in_schema=False)
async def status_page(
    request: Request[Any, Any, Any], proxy: NamedDependency[MailProxy], gate: NamedDependency[Gate]
) -> Response[str]:
    admitted = _signed_in(request, gate)
    if isinstance(admitted, Response):
        return admitted
    if not admitted:
        return Response("", status_code=303, headers={"Location": "/ui/login"})
    return _page(
        "mailproxy status",
        await _status_body(proxy),
        head="<meta http-equiv='refresh' content='30'>",
    )


async def _status_body(proxy: MailProxy) -> str:
    statuses = list(Status)
    queue_rows, paused_rows, failure_rows = [], [], []
    for tenant in await proxy.list_tenants():
        counts = await proxy.counts(tenant.id)
        queue_rows.append([tenant.id, *(counts.get(s, 0) for s in statuses)])
        for account in await proxy.list_accounts(tenant.id):
            pause = await proxy.store.account_pause(tenant.id, account.id)
            if pause is not None:
                paused_rows.append(
                    [tenant.id, account.id, pause.reason, _utc(pause.until_ts) + " UTC"]
                )
        failed = await proxy.list_messages(tenant.id, statuses=[Status.ERROR], limit=1000)
        for message in failed.messages[-10:]:
            failure_rows.append([tenant.id, message.id, message.account_id, message.error])
    backlog_rows = [
        [tenant.id, backlog.count, state.last_error]
        for tenant, state, backlog, _ in await proxy.sync_status()
        if tenant.client_base_url
    ]
    minutes_table, tenants_table = _throughput(*await proxy.recent_throughput(THROUGHPUT_MINUTES))
    return (
        "<h1>mailproxy status</h1>"
        f"<p class='note'>As of {_utc(proxy.now())} UTC; this page reloads every 30 s.</p>"
        "<h2>Queue by tenant</h2>"
        + _table(["tenant", *statuses], queue_rows, "no tenants")
        + f"<h2>Throughput, last {THROUGHPUT_MINUTES} minutes</h2>"
        + tenants_table
        + minutes_table
        + "<h2>Paused accounts</h2>"
        + _table(["tenant", "account", "reason", "until"], paused_rows, "none")
        + "<h2>Last failures</h2>"
        + _table(["tenant", "message", "account", "error"], failure_rows, "none")
        + "<h2>Delivery reports</h2>"
        + _table(["tenant", "waiting", "last error"], backlog_rows, "no tenant reports")
        + await _refused_report_urls(proxy)
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
    "<h1>mailproxy</h1><form method='post' action='/ui/login'>"
    "<label>Admin token <input type='password' name='token' autofocus></label> "
    "<button type='submit'>Sign in</button></form>"
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
        return _page("sign in", "<p>Wrong token.</p>" + LOGIN_FORM, status=401)
    cookie = Cookie(
        key=COOKIE, value=gate.sessions.issue(gate.proxy.now()),
        max_age=int(gate.sessions.lifetime_s), httponly=True, samesite="strict", path="/ui",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return Response("", status_code=303, headers={"Location": "/ui"}, cookies=[cookie])


STATUS_PAGE_ROUTES = [status_page, login_page, login]
