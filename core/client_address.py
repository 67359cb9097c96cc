"""The client's address, trusting `X-Forwarded-For` only as far as our own proxies vouch.

`NUM_PROXIES` says how many reverse proxies of ours stand in front of gunicorn (0 under
`make run`: clients connect directly; 1 in docker-compose: nginx). Each proxy appends the
address it received the connection from, so the entry `NUM_PROXIES` from the right is the
last one written by a proxy we trust; anything left of it is the client's own claim and
is never used. With no header, or a header shorter than the trusted chain (a request that
bypassed the proxy), the peer address is the answer.

Every per-address decision (rate limits, login and API-key throttles, the `/metrics`
allow-list) goes through `client_ip`, so a made-up header changes none of them. Throttles
key on `client_throttle_key`, which is `client_ip` with IPv6 widened to its /64: one host
usually owns a whole /64 and can pick a fresh source address from it for every request.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

UNKNOWN = "unknown"

# The prefix one IPv6 subscriber is normally given (RFC 6177); all of it counts as one client.
_IPV6_THROTTLE_PREFIX = 64


def _valid_ip(value: str) -> str | None:
    text = value.strip()
    # Some proxies write "1.2.3.4:5678" or "[2001:db8::1]:443"; the port says nothing about
    # who the client is. A bare IPv6 address has several colons and no brackets: kept whole.
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    # A zone ("fe80::1%eth0") names an interface of the sender's host, not the client.
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d; one client, one spelling.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def client_ip(request: HttpRequest) -> str:
    """The address to key per-client decisions on (a string; "unknown" if none is sane)."""
    # DRF's Request wraps the Django request; both carry META.
    meta = request.META
    peer = _valid_ip(meta.get("REMOTE_ADDR", "") or "") or UNKNOWN
    trusted = settings.NUM_PROXIES
    if trusted <= 0:
        return peer
    forwarded = [part for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < trusted:
        return peer
    return _valid_ip(forwarded[-trusted]) or peer


def client_throttle_key(request: HttpRequest) -> str:
    """`client_ip` as throttles count it: an IPv4 address, an IPv6 /64 network, or "unknown"."""
    address = client_ip(request)
    if address == UNKNOWN or ":" not in address:
        return address
    network = ipaddress.IPv6Network((address, _IPV6_THROTTLE_PREFIX), strict=False)
    return str(network.network_address)
