"""The ``[submission]`` settings and who may authenticate before TLS."""

from __future__ import annotations

import pytest

from mailproxy.config import load_settings
from mailproxy.domain.errors import InvalidInput
from mailproxy.entrypoints.smtp import plaintext_auth_allowed
from mailproxy.mail_settings import SubmissionSettings


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"GMP_SUBMISSION_PORT": "70000"}, "submission.port"),
        ({"GMP_SUBMISSION_MAX_RECIPIENTS": "0"}, "submission.max_recipients"),
        ({"GMP_SUBMISSION_AUTH_FAILURE_DELAY_S": "60"}, "submission.auth_failure_delay_s"),
        ({"GMP_SUBMISSION_CERT_FILE": "cert.pem"}, "submission.key_file"),
        ({"GMP_SUBMISSION_TLS_PORT": "465"}, "submission.tls_port"),
        # Off loopback without TLS, no client could ever authenticate.
        ({"GMP_SUBMISSION_PORT": "587", "GMP_SUBMISSION_HOST": "0.0.0.0"}, "submission.cert_file"),
    ],
)
def test_a_submission_setting_that_cannot_work_is_refused_by_name(environ, named):
    with pytest.raises(InvalidInput) as refused:
        load_settings(environ=environ)
    assert refused.value.field == named


def test_certificate_files_must_exist(tmp_path):
    environ = {
        "GMP_SUBMISSION_CERT_FILE": str(tmp_path / "missing.pem"),
        "GMP_SUBMISSION_KEY_FILE": str(tmp_path / "missing.key"),
    }
    with pytest.raises(InvalidInput, match="no file"):
        load_settings(environ=environ)


def test_plaintext_auth_off_loopback_is_the_operators_explicit_choice():
    settings = load_settings(
        environ={
            "GMP_SUBMISSION_PORT": "587",
            "GMP_SUBMISSION_HOST": "0.0.0.0",
            "GMP_SUBMISSION_ALLOW_PLAINTEXT_AUTH": "true",
        }
    )
    assert settings.submission.allow_plaintext_auth


@pytest.mark.parametrize(
    ("peer", "implicit_tls", "allow", "allowed"),
    [
        ("127.0.0.1", False, False, True),
        ("::1", False, False, True),
        ("192.0.2.7", False, False, False),  # a remote client: STARTTLS first
        ("2001:db8::7", False, False, False),
        ("192.0.2.7", True, False, True),  # TLS from the first byte
        ("192.0.2.7", False, True, True),  # the operator allows it
        ("", False, False, False),  # unknown peer: as a remote one
    ],
)
def test_auth_before_tls(peer, implicit_tls, allow, allowed):
    options = SubmissionSettings(allow_plaintext_auth=allow)
    assert plaintext_auth_allowed(peer, implicit_tls, options) is allowed
