"""Reading the bounce mailbox: DSNs, feedback reports, non-standard bounces, auto-replies
and everything else, over a corpus of sample messages (``bounce_samples/``).

The samples' tokens were made with the key ``b"k" * 32`` for tenant ``acme``; each is
checked here against the message it names, so a token the parser mangles or invents fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailproxy.domain.bounce_parsing import (
    MAX_RECIPIENT_GROUPS,
    MAX_SUMMARY_CHARS,
    parse_report,
)
from mailproxy.domain.bounces import BounceFact, ComplaintFact, DelayFact, ParsedReport
from mailproxy.domain.correlation import (
    TokenRef,
    find_tokens,
    make_token,
    read_token,
    token_matches,
)

SAMPLES = Path(__file__).parent / "bounce_samples"
KEY = b"k" * 32
TENANT = "acme"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.eml").read_bytes()


def hard(recipient, status=None, diagnostic=None, source="dsn"):
    return BounceFact(
        recipient=recipient, type="hard", status=status, diagnostic=diagnostic, source=source
    )


def soft(recipient, status=None, diagnostic=None, source="dsn"):
    return BounceFact(
        recipient=recipient, type="soft", status=status, diagnostic=diagnostic, source=source
    )


# name: kind, bounces, complaints, delays, tokens as (store key, slot, client id) in
# the order expected, the quoted original's Message-ID.
CORPUS = {
    "rfc3464_permanent_failure": (
        "dsn",
        [soft("lena@mail.example.org", "4.0.0", "426 connection timed out")],
        [],
        [],
        [(101, 1, "order-101"), (101, 0, "order-101")],
        "<order-101@sender.example.net>",
    ),
    "postfix_unknown_user": (
        "dsn",
        [hard("nobody@example.com", "5.1.1", 'unknown user: "nobody"')],
        [],
        [],
        [(102, 1, "welcome-102"), (102, 0, "welcome-102")],
        "<welcome-102@sender.example.net>",
    ),
    "exim_plain_bounce": (
        "heuristic",
        [hard("gone@example.org", source="heuristic")],
        [],
        [],
        [(103, 0, "invoice-103")],
        None,
    ),
    "qmail_plain_bounce": (
        "heuristic",
        [hard("reader@qmail.example.com", source="heuristic")],
        [],
        [],
        [(104, 0, "news-104")],
        None,
    ),
    "delayed_dsn": (
        "dsn",
        [],
        [],
        [
            DelayFact(
                recipient="slow@example.com",
                status="4.4.7",
                diagnostic="451 4.4.7 greylisted, try again later",
            )
        ],
        [(105, 1, "reset-105")],
        "<reset-105@sender.example.net>",
    ),
    "multi_recipient_dsn": (
        "dsn",
        [
            hard(
                "Alice@Example.org",  # the original recipient, as the sender wrote it
                "5.2.2",
                "552 5.2.2 <alice@example.org>: Mailbox full, quota exceeded",
            ),
            soft("bob@example.org", "4.4.1", "421 4.4.1 Connection refused"),
        ],
        [],
        [],
        [(106, 0, "launch-106")],
        "<launch-106@sender.example.net>",
    ),
    "relayed_only_dsn": ("dsn", [], [], [], [], None),
    "verp_delivered_to": (
        "dsn",
        [hard("frank@nonexistent.example", "5.1.2")],
        [],
        [],
        [(108, 2, "digest-108")],
        None,
    ),
    "quoted_ref_only": (
        "dsn",
        [hard("grace@example.net", "5.7.1", "550 5.7.1 Message rejected by policy")],
        [],
        [],
        [(109, 0, "receipt-109")],
        "<receipt-109@sender.example.net>",
    ),
    "arf_abuse": (
        "arf",
        [],
        [ComplaintFact(recipient="user@isp.example.com", feedback_type="abuse")],
        [],
        [(110, 0, "promo-110")],
        "<promo-110@sender.example.net>",
    ),
    "arf_headers_only": (
        "arf",
        [],
        [ComplaintFact(recipient="heidi@mailbox.example.com", feedback_type="abuse")],
        [],
        [(111, 0, "offer-111")],
        "<offer-111@sender.example.net>",
    ),
    "out_of_office": ("auto_reply", [], [], [], [(112, 1, "meeting-112")], None),
    "autoresponder_x_autoreply": ("auto_reply", [], [], [], [], None),
    "human_mail": ("unparsed", [], [], [], [], None),
}


def test_the_corpus_and_the_table_name_the_same_samples():
    assert sorted(p.stem for p in SAMPLES.glob("*.eml")) == sorted(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_sample_gives_its_kind_facts_tokens_and_original(name):
    kind, bounces, complaints, delays, tokens, original_id = CORPUS[name]
    report = parse_report(sample(name))
    assert report.kind == kind
    assert list(report.bounces) == bounces
    assert list(report.complaints) == complaints
    assert list(report.delays) == delays
    assert [read_token(t) for t in report.tokens] == [TokenRef(pk, slot) for pk, slot, _ in tokens]
    for token, (_, _, message_id) in zip(report.tokens, tokens, strict=True):
        assert token_matches(KEY, token, tenant_id=TENANT, message_id=message_id)
    assert report.original_message_id == original_id


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_summary_is_short_and_names_the_subject(name):
    report = parse_report(sample(name))
    assert 0 < len(report.summary) <= MAX_SUMMARY_CHARS
    subject = {
        "human_mail": "Please stop writing to this address",
        "postfix_unknown_user": "Undelivered Mail Returned to Sender",
        "autoresponder_x_autoreply": "Re: Ticket reçu",
    }.get(name)
    if subject is not None:
        assert report.summary.startswith(subject + ":")


def test_an_ordinary_mail_is_unparsed_with_the_reason():
    assert parse_report(sample("human_mail")).summary == (
        "Please stop writing to this address: not a delivery status notification, "
        "feedback report or known bounce format"
    )


def test_a_dsn_that_says_auto_replied_is_still_a_dsn():
    raw = sample("postfix_unknown_user")
    assert b"Auto-Submitted: auto-replied" in raw
    assert parse_report(raw).kind == "dsn"


def test_without_flufl_bounce_non_standard_bounces_are_unparsed_and_dsns_still_read(
    monkeypatch,
):
    # None in sys.modules makes ``import flufl.bounce`` raise ImportError: the extra is
    # not installed.
    monkeypatch.setitem(sys.modules, "flufl.bounce", None)
    assert parse_report(sample("qmail_plain_bounce")).kind == "unparsed"
    assert parse_report(sample("postfix_unknown_user")).bounces == (
        hard("nobody@example.com", "5.1.1", 'unknown user: "nobody"'),
    )


def test_an_envelope_id_that_is_a_token_maps_the_dsn_back():
    raw = sample("multi_recipient_dsn")
    token = make_token(KEY, pk=106, slot=0, tenant_id=TENANT, message_id="launch-106")
    elsewhere = raw.replace(f"Original-Envelope-Id: {token}".encode(), b"")
    only_envelope_id = raw.replace(f"bounces+{token}@".encode(), b"bounces@").replace(
        f"X-Mail-Proxy-Ref: {token}".encode(), b"X-Other: 1"
    )
    assert find_tokens(only_envelope_id.decode()) == [token]
    assert parse_report(only_envelope_id).tokens == (token,)
    inside_a_client_id = only_envelope_id.replace(
        f"Original-Envelope-Id: {token}".encode(), f"Original-Envelope-Id: x-{token}".encode()
    )
    assert parse_report(inside_a_client_id).tokens == ()
    assert parse_report(elsewhere).tokens == (token,)


def test_raw_8bit_headers_do_not_stop_the_bounce_detectors():
    raw = sample("qmail_plain_bounce").replace(
        b"From: MAILER-DAEMON@qmail.example.com",
        "From: Système de messagerie <MAILER-DAEMON@qmail.example.com>".encode(),
    )
    assert parse_report(raw).bounces == (hard("reader@qmail.example.com", source="heuristic"),)


def test_a_failed_recipient_without_status_is_a_hard_bounce():
    raw = sample("verp_delivered_to").replace(b"Status: 5.1.2\r\n", b"")
    assert parse_report(raw).bounces == (hard("frank@nonexistent.example"),)


@pytest.mark.parametrize(
    ("subject", "headers", "kind"),
    [
        ("Out of Office: back on Monday", "", "auto_reply"),
        ("Automatic reply: Your order", "", "auto_reply"),
        ("Auto: Re: invoice", "", "auto_reply"),
        ("Hello", "Auto-Submitted: auto-generated\r\n", "auto_reply"),
        ("Hello", "X-Autorespond: yes\r\n", "auto_reply"),
        ("Hello", "Precedence: auto_reply\r\n", "auto_reply"),
        ("Hello", "Auto-Submitted: no\r\n", "unparsed"),
        ("Hello", "Precedence: bulk\r\n", "unparsed"),
    ],
)
def test_auto_replies_are_told_by_their_headers_or_subject(subject, headers, kind):
    raw = (
        f"From: someone@example.com\r\nTo: bounces@bounce.example.net\r\n"
        f"Subject: {subject}\r\n{headers}\r\nSee you.\r\n"
    ).encode()
    assert parse_report(raw).kind == kind


def test_a_feedback_report_says_its_feedback_type_in_lower_case():
    raw = sample("arf_abuse").replace(b"Feedback-Type: Abuse", b"Feedback-Type: Fraud")
    assert parse_report(raw).complaints == (
        ComplaintFact(recipient="user@isp.example.com", feedback_type="fraud"),
    )


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
def test_a_feedback_report_that_complains_about_nothing_gives_no_complaint(feedback_type):
    raw = sample("arf_abuse").replace(
        b"Feedback-Type: Abuse", b"Feedback-Type: " + feedback_type.encode()
    )
    report = parse_report(raw)
    assert (report.kind, report.complaints) == ("arf", ())
    assert report.summary.endswith(f"feedback report ({feedback_type}), 0 complaint(s)")


def test_at_most_a_thousand_recipient_groups_are_read():
    group = b"Final-Recipient: rfc822; x@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    raw = (
        b"From: mailer-daemon@example.com\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        + group * (MAX_RECIPIENT_GROUPS + 500)
        + b"--b--\r\n"
    )
    report = parse_report(raw)
    assert report.kind == "dsn"
    assert 0 < len(report.bounces) <= MAX_RECIPIENT_GROUPS


@given(
    pk=st.integers(min_value=0, max_value=2**63 - 1),
    slot=st.integers(min_value=0, max_value=2**14 - 1),
)
@settings(max_examples=200)
def test_the_token_of_any_message_is_found_in_its_verp_address(pk, slot):
    token = make_token(KEY, pk=pk, slot=slot, tenant_id=TENANT, message_id="m")
    assert find_tokens(f"To: <bounces+{token.upper()}@bounce.example.net>") == [token]


def check(report: ParsedReport) -> None:
    assert isinstance(report, ParsedReport)
    assert len(report.summary) <= MAX_SUMMARY_CHARS
    assert all(find_tokens(t) == [t] for t in report.tokens)
    assert len(set(report.tokens)) == len(report.tokens)


@given(st.binary(max_size=4096))
@settings(max_examples=200)
def test_arbitrary_bytes_never_raise(raw):
    check(parse_report(raw))


@given(
    name=st.sampled_from(sorted(CORPUS)),
    cut=st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=20),
)
@settings(max_examples=200)
def test_truncated_and_corrupted_samples_never_raise(name, cut, flips):
    raw = bytearray(sample(name))
    del raw[cut % (len(raw) + 1) :]
    for at, mask in flips:
        if raw:
            raw[at % len(raw)] ^= mask
    check(parse_report(bytes(raw)))
