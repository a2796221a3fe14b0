"""DKIM signatures with dkimpy (the ``dkim`` extra), keys made and read with cryptography.

dkimpy signs the header fields it lists as usual (From, To, Subject, Date, Message-ID,
the MIME fields, ...) and signs From once more than it occurs, so that no second From can
be added; canonicalization is relaxed for header and body, which survives the usual
rewrapping by relays. Ed25519 keys (RFC 8463) go to dkimpy as their raw 32 bytes.
"""

from __future__ import annotations

import base64
from collections import OrderedDict

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailproxy.domain.dkim import DkimAlgorithm, DkimKey
from mailproxy.domain.errors import InvalidInput
from mailproxy.ports.signing import SigningError

RSA_BITS = 2048
#: Shorter RSA keys are refused by verifiers (RFC 8301); longer ones than the maximum
#: cost seconds to check and sign with, and no DNS TXT record carries them comfortably.
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 4096
#: Keys whose signing material is kept ready.
KEYS_KEPT = 256


class DkimpySigner:
    """:class:`~mailproxy.ports.signing.MessageSigner` with dkimpy. Raises ImportError
    when dkimpy is not installed (``pip install 'mailproxy[dkim]'``). What dkimpy is given
    for a key is worked out once per key and kept (the last :data:`KEYS_KEPT`): reading
    and checking a PEM costs far more than a signature."""

    def __init__(self) -> None:
        import dkim  # an optional dependency (the dkim extra), loaded when signing is used

        self._dkim = dkim
        self._material: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def key_pair(self, private_pem: str | None, algorithm: DkimAlgorithm) -> tuple[str, str]:
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
        if private_pem is None:
            if algorithm == "rsa-sha256":
                key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
            else:
                key = ed25519.Ed25519PrivateKey.generate()
        else:
            key = _private_key(private_pem, algorithm)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        if isinstance(key, rsa.RSAPrivateKey):
            public = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        else:
            public = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        return pem, base64.b64encode(public).decode()

    def sign(self, content: bytes, key: DkimKey) -> bytes:
        try:
            field = self._dkim.sign(
                content,
                key.selector.encode(),
                key.domain.encode(),
                self._material_of(key),
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=key.algorithm.encode(),
            )
        except (InvalidInput, self._dkim.DKIMException, ValueError) as exc:
            raise SigningError(f"DKIM {key.selector}._domainkey.{key.domain}: {exc}") from exc
        return bytes(field) + content

    def _material_of(self, key: DkimKey) -> bytes:
        """What dkimpy signs with: the PKCS#8 PEM of an RSA key, the raw 32 bytes
        (base64) of an Ed25519 one."""
        cache_key = (key.algorithm, key.private_key)
        found = self._material.get(cache_key)
        if found is not None:
            self._material.move_to_end(cache_key)
            return found
        private = _private_key(key.private_key, key.algorithm)
        if isinstance(private, rsa.RSAPrivateKey):
            material = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        else:
            raw = private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )  # fmt: skip
            material = base64.b64encode(raw)
        self._material[cache_key] = material
        while len(self._material) > KEYS_KEPT:
            self._material.popitem(last=False)
        return material


def _private_key(
    private_pem: str, algorithm: DkimAlgorithm
) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """The key of ``private_pem``; an RSA key's size is read before its (costly) check,
    so that a huge one is refused at once."""
    data = private_pem.encode()
    try:
        unchecked = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput(
            "private_key", "invalid private_key: not an unencrypted PEM private key"
        ) from None
    if algorithm == "rsa-sha256" and isinstance(unchecked, rsa.RSAPrivateKey):
        if not MIN_RSA_BITS <= unchecked.key_size <= MAX_RSA_BITS:
            raise InvalidInput(
                "private_key",
                f"invalid private_key: RSA keys of {MIN_RSA_BITS} to {MAX_RSA_BITS} bits",
            )
        try:
            checked = serialization.load_pem_private_key(data, password=None)
        except ValueError:
            raise InvalidInput("private_key", "invalid private_key: not a valid RSA key") from None
        assert isinstance(checked, rsa.RSAPrivateKey)
        return checked
    if algorithm == "ed25519-sha256" and isinstance(unchecked, ed25519.Ed25519PrivateKey):
        return unchecked
    raise InvalidInput("private_key", f"invalid private_key: not a key for {algorithm}")
