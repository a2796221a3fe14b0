"""The port that signs outgoing mail with DKIM and makes and reads the keys."""

from __future__ import annotations

from typing import Protocol

from mailproxy.domain.dkim import DkimAlgorithm, DkimKey


class SigningError(Exception):
    """A message could not be signed (a key that does not load, content the signer
    refuses): the attempt fails as a temporary error of the account, never sent
    half-signed."""


class MessageSigner(Protocol):
    """Contract (tests/contract/test_message_signer.py):

    - :meth:`new_private_key` makes a key of ``algorithm`` (RSA: 2048 bits) as PKCS#8 PEM.
    - :meth:`public_key` gives the DNS ``p=`` value (base64) of a private key in PEM; a
      text that is not a private key of ``algorithm`` (or an RSA key under 1024 bits) is
      :class:`~mailproxy.domain.errors.InvalidInput` naming ``private_key``.
    - :meth:`sign` returns ``content`` (a whole message, CRLF line ends) with a
      ``DKIM-Signature`` field first, relaxed/relaxed, over the usual header fields with
      ``From`` signed once more than it occurs (so none can be added); the rest of the
      bytes unchanged. A verifier given :func:`~mailproxy.domain.dkim.dns_record`'s
      value for the key accepts it. Failures are :class:`SigningError`.
    """

    def new_private_key(self, algorithm: DkimAlgorithm) -> str: ...

    def public_key(self, private_pem: str, algorithm: DkimAlgorithm) -> str: ...

    def sign(self, content: bytes, key: DkimKey) -> bytes: ...
