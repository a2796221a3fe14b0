"""The DKIM keys of one tenant, ``mail-proxy NAME TENANT dkim add | list | dns | rotate |
remove``: the keys that sign the tenant's mail, and the DNS records that publish them.
Each command receives the instance as ``instance`` and the tenant id as ``tenant_id``."""

from __future__ import annotations

import time
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from mailproxy.entrypoints.admin import ApiError
from mailproxy.entrypoints.cli.apps import JsonFlag, TargetInstance, TargetTenant, dkim_app
from mailproxy.entrypoints.cli.exits import CommandFailed
from mailproxy.entrypoints.cli.output import Column, local_time, request, show, table

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]


def _path(tenant_id: str, *rest: str) -> str:
    return "/".join(
        [f"/tenant/{quote(tenant_id, safe='')}/dkim", *(quote(r, safe="") for r in rest)]
    )


def _added(answer: dict[str, Any]) -> list[str]:
    key, dns = answer["key"], answer["dns"]
    return [
        f"{key['selector']}._domainkey.{key['domain']} signs {key['domain']}'s mail from now on",
        "publish this DNS record (TXT) before sending:",
        f'  {dns["name"]}  TXT  "{dns["value"]}"',
    ]


def _add(
    instance: TargetInstance,
    tenant_id: str,
    domain: str,
    selector: str,
    algorithm: Algorithm,
    private_key: Path | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"domain": domain, "selector": selector, "algorithm": algorithm}
    if private_key is not None:
        try:
            body["private_key"] = private_key.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise CommandFailed(f"cannot read {private_key}: {error}") from None
    answer: dict[str, Any] = request(instance, "POST", _path(tenant_id), json=body)
    return answer


def zone_strings(value: str, size: int = 255) -> str:
    """A TXT value as zone files write it: quoted strings of at most ``size`` characters
    (an RSA-2048 key's value is about 400), which resolvers join back into one."""
    pieces = [value[i : i + size] for i in range(0, len(value), size)] or [""]
    return " ".join(f'"{piece}"' for piece in pieces)


@dkim_app.command(name="add")
def dkim_add(
    domain: str,
    selector: str,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    algorithm: Algorithm = "rsa-sha256",
    private_key: Path | None = None,
    json_output: JsonFlag = False,
) -> None:
    """Add a key that signs the domain's mail (and its subdomains' without a key of their
    own) from now on; prints the DNS record to publish.

    The key is made by the service (RSA 2048 bits, or Ed25519) unless --private-key gives
    a PEM file. The domain's earlier keys stay published but no longer sign.

    Example: ``mail-proxy myserver acme dkim add example.com mail2026``

    Parameters
    ----------
    domain
        The domain the key signs for (the domain of the From address, or a parent).
    selector
        The key's name under ``_domainkey.DOMAIN`` in DNS.
    algorithm
        rsa-sha256 (understood everywhere) or ed25519-sha256 (RFC 8463; sign with both
        to reach every verifier).
    private_key
        A PEM file with the private key to import.
    """
    answer = _add(instance, tenant_id, domain, selector, algorithm, private_key)
    show(answer, json_output, _added)


@dkim_app.command(name="list")
def dkim_list(
    *, instance: TargetInstance, tenant_id: TargetTenant, json_output: JsonFlag = False
) -> None:
    """List the tenant's keys, oldest first: ``signs`` marks the one that signs each
    domain's mail now.

    Example: ``mail-proxy myserver acme dkim list``
    """
    keys = request(instance, "GET", _path(tenant_id))["keys"]
    columns: list[Column] = [
        ("domain", lambda k: k["domain"]),
        ("selector", lambda k: k["selector"]),
        ("algorithm", lambda k: k["algorithm"]),
        ("signs", lambda k: "yes" if k["active"] else "no"),
        ("added", lambda k: local_time(k["created_ts"])),
    ]
    table(keys, json_output, columns, "no DKIM keys")


@dkim_app.command(name="dns")
def dkim_dns(
    domain: str | None = None,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    json_output: JsonFlag = False,
) -> None:
    """Print the DNS records (TXT) to publish for the tenant's keys, one per line, in
    zone-file form.

    Example: ``mail-proxy myserver acme dkim dns example.com``

    Parameters
    ----------
    domain
        Only the keys of this domain.
    """
    keys = request(instance, "GET", _path(tenant_id))["keys"]
    records = [k["dns"] for k in keys if domain is None or k["domain"] == domain.lower()]
    if not records and not json_output:
        raise CommandFailed(f"no DKIM keys{f' for {domain}' if domain else ''}")

    def lines(found: list[dict[str, str]]) -> list[str]:
        return [f"{r['name']}. IN TXT {zone_strings(r['value'])}" for r in found]

    show(records, json_output, lines)


@dkim_app.command(name="rotate")
def dkim_rotate(
    domain: str,
    *,
    instance: TargetInstance,
    tenant_id: TargetTenant,
    selector: str | None = None,
    algorithm: Algorithm = "rsa-sha256",
    json_output: JsonFlag = False,
) -> None:
    """Give the domain a new key that signs from now on; the old one stays published
    (inactive) so that mail signed with it still verifies. Remove the old one once
    resolvers have had time to forget it (a few days).

    Example: ``mail-proxy myserver acme dkim rotate example.com``

    Parameters
    ----------
    domain
        The domain whose key changes.
    selector
        The new key's selector (default: mp and today's date, such as mp20261207).
    algorithm
        rsa-sha256 or ed25519-sha256.
    """
    chosen = selector or f"mp{time.strftime('%Y%m%d', time.gmtime())}"
    answer = _add(instance, tenant_id, domain, chosen, algorithm, None)
    show(answer, json_output, _added)


@dkim_app.command(name="remove")
def dkim_remove(
    domain: str, selector: str, *, instance: TargetInstance, tenant_id: TargetTenant
) -> None:
    """Remove a key; when it was the one that signed, the domain's newest remaining key
    signs. Unpublish its DNS record afterwards.

    Example: ``mail-proxy myserver acme dkim remove example.com mail2025``

    Parameters
    ----------
    domain
        The domain of the key.
    selector
        The key's selector.
    """
    try:
        request(instance, "DELETE", _path(tenant_id, domain, selector))
    except ApiError as error:
        if error.status == HTTPStatus.NOT_FOUND and str(error).startswith("DKIM key"):
            raise CommandFailed(f"no DKIM key {selector} for {domain}") from None
        raise
    print(f"{selector}._domainkey.{domain} removed")
