"""DKIM signatures with dkimpy (the ``dkim`` extra), keys made and read with cryptography.

dkimpy signs the header fields it lists as usual (From, To, Subject, Date, Message-ID,
the MIME fields, ...) and signs From once more than it occurs, so that no second From can
be added; canonicalization is relaxed for header and body, which survives the usual
rewrapping by relays. Ed25519 keys (RFC 8463) go to dkimpy as their raw 32 bytes.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailproxy.domain.dkim import DkimAlgorithm, DkimKey
from mailproxy.domain.errors import InvalidInput
from mailproxy.ports.signing import SigningError

RSA_BITS = 2048
#: Shorter RSA keys are refused by verifiers (RFC 8301).
MIN_RSA_BITS = 1024


class DkimpySigner:
    """:class:`~mailproxy.ports.signing.MessageSigner` with dkimpy. Raises ImportError
    when dkimpy is not installed (``pip install 'mailproxy[dkim]'``)."""

    def __init__(self) -> None:
        import dkim  # an optional dependency (the dkim extra), loaded when signing is used

        self._dkim = dkim

    def new_private_key(self, algorithm: DkimAlgorithm) -> str:
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        if algorithm == "rsa-sha256":
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def public_key(self, private_pem: str, algorithm: DkimAlgorithm) -> str:
        key = _private_key(private_pem, algorithm)
        if isinstance(key, rsa.RSAPrivateKey):
            der = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return base64.b64encode(der).decode()
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(raw).decode()

    def sign(self, content: bytes, key: DkimKey) -> bytes:
        try:
            private = _private_key(key.private_key, key.algorithm)
            if isinstance(private, rsa.RSAPrivateKey):
                material = key.private_key.encode()
            else:
                raw = private.private_bytes(
                    serialization.Encoding.Raw,
                    serialization.PrivateFormat.Raw,
                    serialization.NoEncryption(),
                )
                material = base64.b64encode(raw)
            field = self._dkim.sign(
                content,
                key.selector.encode(),
                key.domain.encode(),
                material,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=key.algorithm.encode(),
            )
        except (InvalidInput, self._dkim.DKIMException, ValueError) as exc:
            raise SigningError(f"DKIM {key.selector}._domainkey.{key.domain}: {exc}") from exc
        return bytes(field) + content


def _private_key(
    private_pem: str, algorithm: DkimAlgorithm
) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput(
            "private_key", "invalid private_key: not an unencrypted PEM private key"
        ) from None
    if algorithm == "rsa-sha256" and isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise InvalidInput(
                "private_key", f"invalid private_key: RSA needs {MIN_RSA_BITS} bits at least"
            )
        return key
    if algorithm == "ed25519-sha256" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise InvalidInput("private_key", f"invalid private_key: not a key for {algorithm}")
