"""Requests Refinery sends to addresses a user gave (judges' endpoints; teachers and trackers later).

A user-given URL may not reach this machine or its private network (server-side request forgery): its host is
resolved and every address it resolves to is checked — loopback, private, link-local, shared, multicast,
reserved and unspecified ranges are refused, however the address is spelled (``2130706433``, ``0x7f.1``,
``0177.0.0.1``, ``[::ffff:127.0.0.1]``, a name that resolves there) — unless an administrator listed the host
in ``REFINERY_OUTBOUND_ALLOW_HOSTS``. The check runs when the URL is saved and again on every request the
worker sends, redirects included (``guarded_client`` checks each request at its transport)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.core.config import get_settings


class OutboundRefused(ValueError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def _listed(host: str, port: int | None, allowed: list[str]) -> bool:
    host = host.lower().strip("[]")
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        name, _sep, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if name.strip("[]") == host and (not entry_port or entry_port == str(port)):
            return True
    return False


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return _forbidden(mapped)
    for label, flag in (
        ("loopback", address.is_loopback),
        ("private", address.is_private),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("unspecified", address.is_unspecified),
        ("non-public", not address.is_global),
    ):
        if flag:
            return label
    return None


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address ``host`` stands for, as the operating system's resolver reads it (which is how the
    request would connect, so the integer and octal spellings resolve as they would be reached)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_url(url: str, *, unresolvable_ok: bool = False) -> None:
    """Raise OutboundRefused unless ``url`` is http(s) to public addresses only, or to a listed host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused(url, "only http:// and https:// URLs with a host can be used")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise OutboundRefused(url, "the port is not a number from 0 to 65535") from exc
    settings = get_settings()
    own = urlsplit(settings.inference_base_url)  # a local judge asks Refinery's own inference process
    allowed = [*settings.allowed_outbound_hosts, f"{own.hostname}:{own.port or 80}"]
    if _listed(parts.hostname, port, allowed):
        return
    try:
        addresses = resolve(parts.hostname, port)
    except (OSError, UnicodeError) as exc:
        if unresolvable_ok:
            return
        raise OutboundRefused(url, f"the host {parts.hostname} cannot be resolved") from exc
    for address in addresses:
        label = _forbidden(address)
        if label:
            raise OutboundRefused(
                url,
                f"{parts.hostname} resolves to {address}, a {label} address; an administrator can allow the host "
                "with REFINERY_OUTBOUND_ALLOW_HOSTS",
            )


class _GuardedTransport(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        check_url(str(request.url))
        return super().handle_request(request)


def guarded_client(**options: Any) -> httpx.Client:
    """An httpx client whose every request (a followed redirect too) passes check_url first."""
    return httpx.Client(transport=_GuardedTransport(), **options)
