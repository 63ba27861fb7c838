"""Address management for OpenHA's own subnets: VIPs and instance addresses, unique per subnet.

It raises its own errors (`AddressError` and its kinds); the API maps them to
HTTP answers in `openha.api.errors`, a provider to a failed apply.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from openha.models import Port, Subnet


class AddressError(Exception):
    """An address cannot be allocated; the message says why, in the API's words."""


class AddressOutsideSubnet(AddressError):
    """The requested address is not in the subnet's CIDR."""


class AddressNotUsable(AddressError):
    """The requested address names the subnet itself: its network (IPv6: the
    subnet-router anycast) or IPv4 broadcast address."""


def is_usable(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> bool:
    """Whether `addr` of `net` may be a host's: not the network address nor (IPv4) the
    broadcast one, except on point-to-point prefixes (/31, /32, /127, /128: RFC 3021, 6164)."""
    if net.version == 4 and net.prefixlen < 31:
        return addr not in (net.network_address, net.broadcast_address)
    if net.version == 6 and net.prefixlen < 127:
        return addr != net.network_address
    return True


class AddressInUse(AddressError):
    """The requested address is taken (by a port, or it is the gateway)."""


class SubnetExhausted(AddressError):
    """No free address is left in the subnet's allocation pools."""


def pool_ranges(subnet: Subnet) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]]:
    if subnet.allocation_pools:
        return [
            (ipaddress.ip_address(p["start"]), ipaddress.ip_address(p["end"]))
            for p in subnet.allocation_pools
        ]
    net = ipaddress.ip_network(subnet.cidr)
    first = net.network_address + 1
    last = net.broadcast_address - 1 if net.version == 4 else net.broadcast_address
    return [(first, last)]


def _candidates(subnet: Subnet) -> Iterator[str]:
    gateway = subnet.gateway_ip
    for start, end in pool_ranges(subnet):
        version = type(start)
        for value in range(int(start), int(end) + 1):
            addr = str(version(value))
            if addr != gateway:
                yield addr


def allocate(
    session: Session,
    subnet: Subnet,
    *,
    project_id: str,
    device_owner: str,
    device_id: str,
    name: str = "",
    ip_address: str | None = None,
) -> Port:
    """Take one address from the subnet: the requested one, or the first free in its pools.

    Allocations on one subnet queue on its row (PostgreSQL; SQLite's BEGIN IMMEDIATE
    serializes writers anyway): the next one reads the addresses taken after the
    previous one committed, so two never pick the same free address.
    """
    session.execute(select(Subnet.id).where(Subnet.id == subnet.id).with_for_update())
    taken = set(session.scalars(select(Port.ip_address).where(Port.subnet_id == subnet.id)))
    if ip_address is not None:
        addr = ipaddress.ip_address(ip_address)
        if addr not in ipaddress.ip_network(subnet.cidr):
            raise AddressOutsideSubnet(
                f"IP address {ip_address} is not in subnet {subnet.id} ({subnet.cidr})."
            )
        if not is_usable(addr, ipaddress.ip_network(subnet.cidr)):
            raise AddressNotUsable(
                f"IP address {ip_address} is not a valid IP for the specified subnet "
                f"{subnet.id} ({subnet.cidr}): it is its network or broadcast address."
            )
        if str(addr) in taken or str(addr) == subnet.gateway_ip:
            raise AddressInUse(
                f"IP address {ip_address} is already allocated in subnet {subnet.id}."
            )
        chosen = str(addr)
    else:
        chosen = next((c for c in _candidates(subnet) if c not in taken), "")
        if not chosen:
            raise SubnetExhausted(f"No more IP addresses available on subnet {subnet.id}.")
    port = Port(
        project_id=project_id,
        network_id=subnet.network_id,
        subnet_id=subnet.id,
        ip_address=chosen,
        device_owner=device_owner,
        device_id=device_id,
        name=name,
        mac_address=_mac_for(chosen),
    )
    session.add(port)
    session.flush()
    return port


def _mac_for(ip: str) -> str:
    # A stable locally administered MAC per address keeps ARP caches valid across rebuilds.
    digest = ipaddress.ip_address(ip).packed[-4:]
    return "fa:16:" + ":".join(f"{b:02x}" for b in digest)


def release_device(session: Session, device_id: str) -> None:
    for port in session.scalars(select(Port).where(Port.device_id == device_id)):
        session.delete(port)
