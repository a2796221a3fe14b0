"""Attachment references that cannot leave their sandbox: file paths that stay under their
roots, message-supplied URLs that stay under the tenant's prefixes. Pure and lexical; the
adapters re-check what only I/O can tell (symlinks, resolved addresses).
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Sequence
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

from mailproxy.domain.egress import check_http_url
from mailproxy.domain.errors import InvalidInput

_ENDPOINT = re.compile(r"@(?:\[(?P<url>[^\]]+)\])?(?P<params>.*)", re.DOTALL)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def check_file_path(field: str, path: str) -> PurePosixPath:
    """A filesystem reference as a path: no NUL, no backslash, no ``..`` segment — also
    once percent-decoded and once Unicode-normalised (full-width ``．．／`` is ``../``)."""
    forms = {path, unquote(path), unicodedata.normalize("NFKC", path)}
    forms.add(unicodedata.normalize("NFKC", unquote(path)))
    for form in forms:
        if "\x00" in form or "\\" in form:
            raise InvalidInput(field, f"invalid {field}: NUL or backslash in path")
        if ".." in PurePosixPath(form).parts:
            raise InvalidInput(field, f"invalid {field}: '..' in path")
    if not path.strip():
        raise InvalidInput(field, f"invalid {field}: empty path")
    return PurePosixPath(path)


def under_root(path: PurePosixPath, roots: Sequence[PurePosixPath]) -> bool:
    """Is ``path`` (absolute, without ``..``) lexically inside one of ``roots``?"""
    return any(path == root or path.is_relative_to(root) for root in roots)


def normalize_url(url: str) -> str:
    """The form prefixes are compared in: scheme and host lower-cased, default port
    dropped, dot-segments resolved, percent-encoded unreserved characters decoded."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    path = _decode_unreserved(parts.path) or "/"
    resolved = posixpath.normpath(path)
    if path.endswith("/") and not resolved.endswith("/"):
        resolved += "/"
    if resolved.startswith("//"):
        resolved = "/" + resolved.lstrip("/")
    return urlunsplit((scheme, host, resolved, _decode_unreserved(parts.query), ""))


def _decode_unreserved(text: str) -> str:
    def keep(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else match.group(0).upper()

    return re.sub(r"%([0-9A-Fa-f]{2})", keep, text)


def url_allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Does ``url`` fall under one of ``prefixes``, on a path-segment boundary, after both
    are normalised? (``https://f.example/public/`` never admits
    ``https://f.example/public/../private/x``.)"""
    target = normalize_url(url)
    for prefix in prefixes:
        base = normalize_url(prefix)
        if target == base:
            return True
        boundary = base if base.endswith("/") else base + "/"
        if target.startswith(boundary):
            return True
    return False


def check_url(field: str, url: str, prefixes: Sequence[str]) -> str:
    """A message-supplied URL: http(s), no credentials, under a tenant prefix."""
    check_http_url(field, url)
    if not url_allowed(url, prefixes):
        raise InvalidInput(
            field, f"invalid {field}: URL not under the tenant's attachment_url_prefixes"
        )
    return url


def split_endpoint(storage_path: str) -> tuple[str | None, str]:
    """``@params`` → (None, params); ``@[url]params`` → (url, params); an explicit
    ``endpoint`` mode may omit the ``@``."""
    if not storage_path.startswith("@"):
        return None, storage_path
    match = _ENDPOINT.fullmatch(storage_path)
    assert match is not None  # the pattern accepts every string that starts with "@"
    return match["url"], match["params"]
