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

    - :meth:`key_pair` makes a key of ``algorithm`` (RSA: 2048 bits) when ``private_pem``
      is None, or reads the one given; returns the private key as PKCS#8 PEM (what
      :meth:`sign` reads, whatever form was given) and the DNS ``p=`` value (base64). A
      text that is not one unencrypted private key of ``algorithm``, or an RSA key
      outside 1024..4096 bits, is :class:`~mailproxy.domain.errors.InvalidInput` naming
      ``private_key``. It may take a fraction of a second (key generation): call it off
      the event loop.
    - :meth:`sign` returns ``content`` (a whole message, CRLF line ends) with a
      ``DKIM-Signature`` field first, relaxed/relaxed, over the usual header fields with
      ``From`` signed once more than it occurs (so none can be added); the rest of the
      bytes unchanged. A verifier given :func:`~mailproxy.domain.dkim.dns_record`'s
      value for the key accepts it. Failures are :class:`SigningError`.
    """

    def key_pair(self, private_pem: str | None, algorithm: DkimAlgorithm) -> tuple[str, str]: ...

    def sign(self, content: bytes, key: DkimKey) -> bytes: ...
