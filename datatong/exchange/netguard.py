"""Where the platform may send requests on a department's behalf (HTTP data sources,
subscription webhooks): not to itself and not to cloud metadata services.

A department admin names these URLs, and the platform's server then connects to them — a
classic server-side request forgery path. Refused always: link-local addresses (including
the metadata services at 169.254.169.254 and 100.100.100.200), unspecified and multicast
addresses. Refused unless listed in ``DATATONG_OUTBOUND_ALLOW`` (comma-separated
addresses or networks, e.g. ``127.0.0.1,10.8.0.0/16``): loopback, where the platform's own
API, database and bus listen. Private networks (10/8, 172.16/12, 192.168/16) are allowed:
government systems live there.

Checked when the URL is saved and again, on the resolved addresses, before every
connection (a name that later resolves elsewhere is caught at that point; between the
check and the connection a DNS answer could still change — run the platform with an
egress firewall for that)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from datatong.errors import invalid

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA = {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}


def _allowed(addr: Address, allow: Sequence[str]) -> bool:
    for item in allow:
        try:
            if addr in ipaddress.ip_network(item.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


def refusal(addr: Address, allow: Sequence[str]) -> str | None:
    """Why ``addr`` may not be connected to, or None."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_link_local or addr in METADATA:
        return "链路本地或云元数据地址"
    if addr.is_unspecified or addr.is_multicast or addr.is_reserved:
        return "保留、组播或未指定地址"
    if addr.is_loopback and not _allowed(addr, allow):
        return "本机回环地址（平台自身）"
    return None


def _addresses(host: str) -> list[Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []  # unresolvable now: the connection will fail on its own
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def why_not(url: str, allow: Sequence[str]) -> str | None:
    """None when every address ``url``'s host resolves to may be connected to."""
    host = urlsplit(url).hostname or ""
    for addr in _addresses(host):
        reason = refusal(addr, allow)
        if reason:
            return f"{reason}：{addr}"
    return None


def check_url(url: str, allow: Sequence[str], field: str = "url") -> str:
    """For a URL being saved: 422 ``exchange.url_forbidden`` naming the address."""
    reason = why_not(url, allow)
    if reason:
        raise invalid(
            "exchange.url_forbidden",
            f"不允许平台访问该地址（{reason}）；如确需访问本机地址，请由运维在 DATATONG_OUTBOUND_ALLOW 中放行",
            f"The platform may not connect to this address ({reason}); "
            "loopback may be allowed with DATATONG_OUTBOUND_ALLOW",
            field,
        )
    return url
