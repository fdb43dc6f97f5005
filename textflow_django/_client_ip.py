"""Which address a request comes from, and what one per-IP cap counts: the one home of both.

The verification service reads the client's address with these (views and forms only hand
it their request; project code may call :func:`client_ip`, re-exported by
``textflow_django.verification``), and nothing else reads ``REMOTE_ADDR`` or
``X-Forwarded-For``. The service takes a ``request`` in its public signature
(``send_code(number, request=request)``), so this sits below it, with the rules: it imports
only the settings and the events.

A site behind a proxy with ``NUM_PROXIES`` left at 0 counts every client as the proxy: the
first request that carries ``X-Forwarded-For`` while ``NUM_PROXIES`` is 0 logs the event
``textflow.deploy.proxy_header_ignored`` (once per process; the header is still ignored, as
it must be when no proxy of ours wrote it). ``check --deploy`` says the same from the
settings (``textflow.W011``).
"""

from __future__ import annotations

import ipaddress
import threading
from typing import TYPE_CHECKING

from ._events import emit
from .conf import conf

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = ["client_ip", "ip_scope", "network_scope", "parse_ip"]


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's IP: ``REMOTE_ADDR``, or with ``NUM_PROXIES = n`` the address the n-th
    proxy from the right saw in ``X-Forwarded-For``.

    Entries a client can forge (everything left of what our own proxies appended) are never
    used, so a forged header cannot reset a per-IP cap. Returns None when unknown.
    """
    if request is None:
        return None
    remote = parse_ip(request.META.get("REMOTE_ADDR"))
    proxies = conf.NUM_PROXIES
    if proxies == 0 and not _header_ignored.locked():
        _tell_header_ignored(request, remote)
    if proxies > 0:
        forwarded = _forwarded(request)
        if forwarded:
            # An entry that is not an address (a misconfigured proxy chain) falls back to
            # REMOTE_ADDR, so junk in the header cannot opt a client out of the IP caps.
            return parse_ip(forwarded[-min(proxies, len(forwarded))]) or remote
    return remote


def _forwarded(request: HttpRequest) -> list[str]:
    """The entries of ``request``'s ``X-Forwarded-For``, stripped, empty ones dropped."""
    entries = (p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(","))
    return [p for p in entries if p]


#: Taken (never released) by the one request that logs proxy_header_ignored in this process.
_header_ignored = threading.Lock()


def _tell_header_ignored(request: HttpRequest, remote: str | None) -> None:
    """Emit ``textflow.deploy.proxy_header_ignored`` if ``request`` carries
    ``X-Forwarded-For``, the first time in this process (of requests racing, exactly one)."""
    entries = _forwarded(request)
    if entries and _header_ignored.acquire(blocking=False):
        # The proxy's address (the peer) and how many hops the header names; never the
        # header's addresses, which are the clients' (or whatever a client forged).
        emit(
            "textflow.deploy.proxy_header_ignored",
            remote_addr=remote or "unknown",
            forwarded_hops=len(entries),
            num_proxies=0,
        )


def _forget_header_ignored() -> None:
    """Let the next request with ``X-Forwarded-For`` log the event again (for tests)."""
    if _header_ignored.locked():
        _header_ignored.release()


def parse_ip(text: str | None) -> str | None:
    """``text`` as a canonical address (an IPv4-mapped IPv6 one as IPv4), or None."""
    try:
        address = ipaddress.ip_address((text or "").strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def ip_scope(ip: str) -> str:
    """What one per-IP cap counts: an IPv4 address, or an IPv6 address's /64 network (one
    subscriber's allocation, whose addresses a client can rotate through at will)."""
    if ":" not in ip:
        return ip
    return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))


def network_scope(ip: str) -> str:
    """What one per-network cap counts: the IPv4 /24 or the IPv6 /48 network of ``ip``, as a
    network in canonical form (``"203.0.113.0/24"``, ``"2001:db8:1::/48"``).

    A /48 is what a site is commonly allotted: it holds 65,536 of the /64s that
    :func:`ip_scope` counts one by one, so a client rotating through them meets this cap; a
    /24 is the IPv4 block a host or a small provider rents as one. An IPv4-mapped IPv6
    address counts in its IPv4 /24. Raises ``ValueError`` when ``ip`` is not an address.
    """
    address = ipaddress.ip_address(ip.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
