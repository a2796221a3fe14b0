"""Contract of the MessageSigner port (ports/signing.py), run against every adapter; the
signatures checked by dkimpy and by OpenDKIM, each given the published record."""

from __future__ import annotations

import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

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
    pem, public = signer.key_pair(pem, algorithm)
    return DkimKey(
        domain=domain, selector=selector, algorithm=algorithm, private_key=pem,
        public_key=public, created_ts=0,
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


def test_an_imported_key_is_kept_in_one_form_with_the_same_public_key(signer):
    made, public = signer.key_pair(None, "rsa-sha256")
    assert made.startswith("-----BEGIN PRIVATE KEY-----\n")
    # The same key in another form (PKCS#1, Windows line ends) reads the same.
    key = serialization.load_pem_private_key(made.encode(), password=None)
    pkcs1 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode().replace("\n", "\r\n")  # fmt: skip
    assert signer.key_pair(pkcs1, "rsa-sha256") == (made, public)
    signed = signer.sign(MESSAGE, key_of(signer, "rsa-sha256", pkcs1))
    assert dkimpy_verifies(signed, [dns_record(key_of(signer, "rsa-sha256", made))])


def rsa_pem(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip


@pytest.mark.parametrize(
    ("text", "algorithm"),
    [
        ("not a key", "rsa-sha256"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "rsa-sha256"),
        ("ED25519", "rsa-sha256"),  # a valid Ed25519 key, named RSA
        ("RSA-4160", "rsa-sha256"),  # past the bound: refused before its costly check
    ],
)
def test_a_text_that_is_not_a_usable_key_of_the_algorithm_is_refused(signer, text, algorithm):
    if text == "ED25519":
        text = signer.key_pair(None, "ed25519-sha256")[0]
    elif text.startswith("RSA-"):
        text = rsa_pem(int(text[4:]))
    with pytest.raises(InvalidInput) as refused:
        signer.key_pair(text, algorithm)
    assert refused.value.field == "private_key"


def test_a_key_that_does_not_load_is_a_signing_error(signer):
    rsa_key_named_ed25519 = msgspec.structs.replace(
        key_of(signer, "rsa-sha256"), algorithm="ed25519-sha256"
    )
    with pytest.raises(SigningError):
        signer.sign(MESSAGE, rsa_key_named_ed25519)
