"""Outcomes of one delivery attempt, and their classification.

An attempt is classified by *what* failed (the failure kind, which the transport derives
from the exception type), *where* (the SMTP phase) and the reply code — never by searching
the server's text. The table (RFC 5321 §4.2.1, §3.8; RFC 4954; RFC 5321 §4.2.1):

==================  ===========================  =========================================
phase               failure                      outcome
==================  ===========================  =========================================
any                 reply 2xx/3xx                (not a failure)
connect             connection/timeout/reply 4xx Temporary (account level)
connect             reply 5xx (e.g. 554 greeting) AccountBroken
ehlo                reply 4xx / 5xx              Temporary / AccountBroken
starttls            any failure                  AccountBroken (never fall back to plaintext)
auth                reply 454 or other 4xx       Temporary (account level)
auth                reply 5xx, not supported     AccountBroken
mail, rcpt          reply 4xx / 5xx              Temporary / Permanent
mail                not supported (SMTPUTF8)     Permanent
mail, rcpt          disconnect / timeout         Temporary (nothing was accepted)
data                reply 4xx / 5xx              Temporary / Permanent
data                disconnect / timeout         Unknown (the server may hold the message)
any                 internal (a bug of ours)     Temporary, counted against the retry cap
==================  ===========================  =========================================

A 552 at RCPT with enhanced code ``5.5.3`` ("too many recipients") is temporary
(RFC 5321 §4.5.3.1.10); every other 552 stays permanent, as Postfix keeps it.
"""

from __future__ import annotations

import enum

import msgspec

from mailproxy.domain.model import RefusedRecipient


class Phase(enum.StrEnum):
    CONNECT = "connect"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    BUILD = "build"


class Failure(enum.StrEnum):
    REPLY = "reply"  # the server answered with a negative reply code
    CONNECTION = "connection"  # refused, reset, closed, unreachable
    TIMEOUT = "timeout"
    TLS = "tls"  # handshake or certificate failure, or TLS required but not offered
    NOT_SUPPORTED = "not_supported"  # a needed extension (AUTH, SMTPUTF8) is not offered
    INTERNAL = "internal"  # an unexpected exception of ours


class Delivered(msgspec.Struct, frozen=True):
    smtp_code: int | None = 250
    refused: tuple[RefusedRecipient, ...] = ()


class Temporary(msgspec.Struct, frozen=True):
    reason: str
    smtp_code: int | None = None
    account_level: bool = False
    #: Every recipient refused at RCPT, one of them for now only: the others' refusals
    #: may still prove an address dead (a bounce source: ``domain.bounces``).
    refused: tuple[RefusedRecipient, ...] = ()


class Permanent(msgspec.Struct, frozen=True):
    reason: str
    smtp_code: int | None = None
    #: The recipients the server refused, when the failure is theirs: every one at RCPT,
    #: or the only accepted one after DATA (a bounce source: ``domain.bounces``).
    refused: tuple[RefusedRecipient, ...] = ()


class Unknown(msgspec.Struct, frozen=True):
    reason: str


class AccountBroken(msgspec.Struct, frozen=True):
    """The account, not the message, is at fault (authentication, TLS, a refusing relay)."""

    reason: str
    smtp_code: int | None = None


class RateLimited(msgspec.Struct, frozen=True):
    """No attempt was made: a rate window is full until ``until_ts`` (``window`` says
    which). With ``reject`` the account's ``limit_behavior`` is ``reject``. With
    ``failover_after_s``, the window was the sending account's own and the message's
    account has fallbacks: a wait longer than that goes to them instead."""

    until_ts: float
    window: str
    reject: bool = False
    failover_after_s: float | None = None


class OutsideWindow(msgspec.Struct, frozen=True):
    """No attempt was made: the message's send window is closed until ``opens_ts``."""

    opens_ts: float


Outcome = Delivered | Temporary | Permanent | Unknown | AccountBroken | RateLimited | OutsideWindow


def _enhanced_class(text: str) -> str | None:
    head = text.split(" ", 1)[0]
    parts = head.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return head
    return None


def describe(phase: Phase, failure: Failure, code: int | None, text: str) -> str:
    """A human-readable reason: the SMTP code and text when there is one."""
    where = f" at {phase.value.upper()}" if phase is not Phase.BUILD else " building the message"
    if code is not None:
        return f"SMTP {code}{where}: {text}".rstrip(": ")
    return f"{failure.value}{where}: {text}".rstrip(": ")


def classify(phase: Phase, failure: Failure, code: int | None = None, text: str = "") -> Outcome:
    """Classify one failed attempt per the table in this module's docstring."""
    reason = describe(phase, failure, code, text)
    if failure is Failure.INTERNAL:
        return Temporary(reason)
    if failure is Failure.TLS or phase is Phase.STARTTLS:
        return AccountBroken(reason, code)
    if failure is Failure.REPLY and code is not None:
        transient = 400 <= code < 500
        if phase is Phase.RCPT and code == 552 and _enhanced_class(text) == "5.5.3":
            transient = True
        if phase in (Phase.CONNECT, Phase.EHLO, Phase.AUTH):
            if transient:
                return Temporary(reason, code, account_level=True)
            return AccountBroken(reason, code)
        if transient:
            return Temporary(reason, code, account_level=code == 421)
        return Permanent(reason, code)
    if failure is Failure.NOT_SUPPORTED:
        if phase in (Phase.AUTH, Phase.EHLO, Phase.CONNECT):
            return AccountBroken(reason)
        return Permanent(reason)
    # CONNECTION or TIMEOUT without a reply.
    if phase is Phase.DATA:
        return Unknown(reason)
    return Temporary(reason, account_level=phase in (Phase.CONNECT, Phase.EHLO, Phase.AUTH))


def classify_refusals(refused: tuple[RefusedRecipient, ...]) -> Outcome:
    """Every recipient was refused at RCPT: temporary when any refusal was temporary
    (a retry may still reach that recipient), otherwise permanent."""
    detail = "; ".join(f"{r.address}: {r.code} {r.reason}" for r in refused)
    outcomes = [classify(Phase.RCPT, Failure.REPLY, r.code, r.reason) for r in refused if r.code]
    temporary = [o for o in outcomes if isinstance(o, Temporary)]
    code = refused[0].code if refused else None
    if temporary:
        return Temporary(
            f"all recipients refused: {detail}", temporary[0].smtp_code, refused=refused
        )
    return Permanent(f"all recipients refused: {detail}", code, refused)
