"""Contract of the MessageSigner port (ports/signing.py), run against every adapter; the
signatures checked by dkimpy and by OpenDKIM, each given the published record."""

from __future__ import annotations

import msgspec
import pytest

from mailproxy.adapters.dkim_signer import DkimpySigner
from mailproxy.domain.dkim import DKIM_ALGORITHMS, DkimKey, dns_record
from mailproxy.domain.errors import InvalidInput
from mailproxy.ports.signing import SigningError
from tests.dkim_check import dkimpy_verifies, opendkim_says

MESSAGE = (
    b"From: Shop <shop@example.com>\r\nTo: someone@example.org\r\nSubject: Hello\r\n"
    b"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\nCaff\xc3\xa8 e   spazi  \r\n.dot line\r\n"
)


@pytest.fixture(params=["dkimpy"])
def signer(request):
    return DkimpySigner()


def key_of(signer, algorithm, pem=None, selector="s1", domain="example.com"):
    pem = pem or signer.new_private_key(algorithm)
    return DkimKey(
        domain=domain, selector=selector, algorithm=algorithm, private_key=pem,
        public_key=signer.public_key(pem, algorithm), created_ts=0,
    )  # fmt: skip


@pytest.mark.parametrize("algorithm", DKIM_ALGORITHMS)
def test_a_signed_message_verifies_with_the_published_record(signer, algorithm):
    key = key_of(signer, algorithm)
    signed = signer.sign(MESSAGE, key)
    assert signed.startswith(b"DKIM-Signature:")
    assert signed.endswith(MESSAGE)  # the message itself is unchanged
    header = signed[: len(signed) - len(MESSAGE)].decode()
    assert "c=relaxed/relaxed" in header
    assert f"a={algorithm}" in header
    # From signed once more than it occurs: a second From would break the signature.
    signed_fields = header.split("h=", 1)[1].split(";", 1)[0].replace("\r\n", "").replace(" ", "")
    assert signed_fields.lower().split(":").count("from") == 2
    record = dns_record(key)
    assert dkimpy_verifies(signed, [record])
    assert "dkim=pass" in opendkim_says(signed, [record])
    tampered = signed.replace(b"Subject: Hello", b"Subject: Hallo")
    assert not dkimpy_verifies(tampered, [record])
    added_from = signed.replace(b"To: ", b"From: evil@example.net\r\nTo: ", 1)
    assert not dkimpy_verifies(added_from, [record])


def test_an_imported_key_gives_the_same_public_key(signer):
    pem = signer.new_private_key("rsa-sha256")
    assert signer.public_key(pem, "rsa-sha256") == signer.public_key(pem, "rsa-sha256")
    assert "BEGIN PRIVATE KEY" in pem


@pytest.mark.parametrize(
    ("text", "algorithm"),
    [
        ("not a key", "rsa-sha256"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "rsa-sha256"),
        ("ED25519", "ed25519-sha256"),  # replaced by an Ed25519 PEM below
    ],
)
def test_a_text_that_is_not_a_key_of_the_algorithm_is_refused(signer, text, algorithm):
    if text == "ED25519":  # a valid key, of the other algorithm
        text, algorithm = signer.new_private_key("ed25519-sha256"), "rsa-sha256"
    with pytest.raises(InvalidInput) as refused:
        signer.public_key(text, algorithm)
    assert refused.value.field == "private_key"


def test_a_key_that_does_not_load_is_a_signing_error(signer):
    rsa_key_named_ed25519 = msgspec.structs.replace(
        key_of(signer, "rsa-sha256"), algorithm="ed25519-sha256"
    )
    with pytest.raises(SigningError):
        signer.sign(MESSAGE, rsa_key_named_ed25519)
