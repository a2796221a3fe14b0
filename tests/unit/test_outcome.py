"""Classification of one attempt: by phase, failure kind and reply code only."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailproxy.domain.model import RefusedRecipient
from mailproxy.domain.outcome import (
    AccountBroken,
    Failure,
    Permanent,
    Phase,
    Temporary,
    Unknown,
    classify,
    classify_refusals,
)

P, F = Phase, Failure


@pytest.mark.parametrize(
    ("phase", "failure", "code", "text", "expected"),
    [
        (P.CONNECT, F.CONNECTION, None, "", Temporary),
        (P.CONNECT, F.TIMEOUT, None, "", Temporary),
        (P.CONNECT, F.REPLY, 421, "busy", Temporary),
        (P.CONNECT, F.REPLY, 554, "no SMTP here", AccountBroken),
        (P.CONNECT, F.TLS, None, "bad cert", AccountBroken),
        (P.STARTTLS, F.REPLY, 454, "tls unavailable", AccountBroken),
        (P.AUTH, F.REPLY, 535, "5.7.8 bad credentials", AccountBroken),
        (P.AUTH, F.REPLY, 454, "4.7.0 try later", Temporary),
        (P.AUTH, F.NOT_SUPPORTED, None, "", AccountBroken),
        (P.MAIL, F.REPLY, 451, "", Temporary),
        (P.MAIL, F.REPLY, 421, "closing", Temporary),
        (P.MAIL, F.REPLY, 550, "", Permanent),
        (P.MAIL, F.NOT_SUPPORTED, None, "SMTPUTF8", Permanent),
        (P.MAIL, F.CONNECTION, None, "", Temporary),
        (P.RCPT, F.REPLY, 450, "4.2.1", Temporary),
        (P.RCPT, F.REPLY, 550, "5.1.1 unknown user", Permanent),
        (P.RCPT, F.REPLY, 552, "5.5.3 too many recipients", Temporary),
        (P.RCPT, F.REPLY, 552, "5.2.2 mailbox full", Permanent),
        (P.RCPT, F.TIMEOUT, None, "", Temporary),
        (P.DATA, F.REPLY, 451, "", Temporary),
        (P.DATA, F.REPLY, 554, "5.7.1 spam", Permanent),
        (P.DATA, F.CONNECTION, None, "EOF", Unknown),
        (P.DATA, F.TIMEOUT, None, "", Unknown),
        (P.BUILD, F.INTERNAL, None, "KeyError", Temporary),
    ],
)
def test_classification_table(phase, failure, code, text, expected):
    outcome = classify(phase, failure, code, text)
    assert type(outcome) is expected
    if code is not None and not isinstance(outcome, Unknown):
        assert outcome.smtp_code == code
        assert str(code) in outcome.reason


@given(st.sampled_from(list(Phase)), st.integers(400, 499), st.text(max_size=30))
def test_a_4xx_reply_is_never_permanent(phase, code, text):
    assert not isinstance(classify(phase, Failure.REPLY, code, text), Permanent)


@given(
    st.sampled_from([Phase.MAIL, Phase.RCPT, Phase.DATA]),
    st.integers(500, 599),
    st.text(alphabet="abc .", max_size=30),
)
def test_the_text_of_a_5xx_reply_cannot_make_it_temporary_except_552_5_5_3(phase, code, text):
    outcome = classify(phase, Failure.REPLY, code, text)
    assert isinstance(outcome, Permanent)


@given(
    st.sampled_from([Phase.CONNECT, Phase.EHLO, Phase.MAIL, Phase.RCPT]),
    st.sampled_from([Failure.CONNECTION, Failure.TIMEOUT]),
)
def test_a_lost_connection_before_data_is_safe_to_retry(phase, failure):
    assert isinstance(classify(phase, failure), Temporary)


def test_all_recipients_refused_is_temporary_if_any_refusal_is():
    mixed = (RefusedRecipient("a@x", 550, "5.1.1 no"), RefusedRecipient("b@x", 450, "4.2.1 busy"))
    hard = (RefusedRecipient("a@x", 550, "5.1.1 no"),)
    assert isinstance(classify_refusals(mixed), Temporary)
    assert isinstance(classify_refusals(hard), Permanent)
    assert "a@x" in classify_refusals(hard).reason
