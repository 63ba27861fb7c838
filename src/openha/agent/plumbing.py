"""What an instance's namespace looks like now, for diagnostics: links, addresses,
routes, the neighbours on the VIP's subnet and the connection hand-off, read with
pyroute2 (never created: `ns_iproute` refuses a missing namespace).

Read-only; `agent.netns` is what changes the plumbing.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from openha.agent import handoff
from openha.agent.netns import namespace_exists, ns_iproute
from openha.domain.spec import InstanceSpec

# Neighbour (NUD) states as `ip neigh` names them.
NUD_STATES = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
}
MAX_NEIGHBOURS = 512


def _nud(state: int) -> str:
    names = [name for bit, name in NUD_STATES.items() if state & bit]
    return "|".join(names) or "NONE"


def vip_networks(spec: InstanceSpec) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnets of the VIP's interface: where its neighbours live."""
    nets = []
    for iface in spec.interfaces:
        if iface.name == spec.vip_interface:
            nets += [ipaddress.ip_interface(a).network for a in iface.addresses]
    if not nets:
        vip = ipaddress.ip_address(spec.vip_address.split("/")[0])
        nets.append(ipaddress.ip_network(f"{vip}/{vip.max_prefixlen}"))
    return nets


def read_plumbing(spec: InstanceSpec) -> dict[str, Any]:
    """The namespace's links, addresses, routes and VIP-subnet neighbours."""
    if not namespace_exists(spec.namespace):
        return {"namespace": spec.namespace, "exists": False}
    nets = vip_networks(spec)
    vip = spec.vip_address.split("/")[0]
    with ns_iproute(spec.namespace) as nsr:
        names: dict[int, str] = {}
        links = []
        for link in nsr.get_links():
            name = link.get("ifname") or ""
            names[link["index"]] = name
            links.append(
                {
                    "name": name,
                    "state": link.get("state"),
                    "operstate": link.get("IFLA_OPERSTATE"),
                    "mtu": link.get("mtu"),
                    "mac": link.get("address"),
                }
            )
        addresses = [
            {
                "interface": names.get(msg["index"], str(msg["index"])),
                "address": f"{msg.get('address')}/{msg['prefixlen']}",
                "vip": msg.get("address") == vip,
            }
            for msg in nsr.get_addr()
            if msg.get("address") is not None
        ]
        routes = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in nsr.get_routes(family=family, table=254):
                dst = route.get("dst")
                routes.append(
                    {
                        "dst": f"{dst}/{route['dst_len']}" if dst else "default",
                        "gateway": route.get("gateway"),
                        "interface": names.get(route.get("oif") or -1),
                        "source": route.get("prefsrc"),
                    }
                )
        neighbours = []
        for neigh in nsr.get_neighbours():
            ip = neigh.get("dst")
            if ip is None or not any(ipaddress.ip_address(ip) in net for net in nets):
                continue
            neighbours.append(
                {
                    "address": ip,
                    "mac": neigh.get("lladdr"),
                    "state": _nud(int(neigh.get("state") or 0)),
                    "interface": names.get(neigh.get("ifindex") or -1),
                }
            )
            if len(neighbours) >= MAX_NEIGHBOURS:
                break
    return {
        "namespace": spec.namespace,
        "exists": True,
        "links": links,
        "addresses": addresses,
        "routes": routes,
        "vip_subnets": [str(n) for n in nets],
        "neighbours": neighbours,
        "handoff": _handoff(spec),
    }


def _handoff(spec: InstanceSpec) -> dict[str, Any]:
    """Where connections unknown here go while a migration retires the VIP's last
    holder (`agent.handoff`), and whether the namespace's table is there."""
    try:
        table: bool | None = handoff.table_present(spec.namespace)
    except (OSError, NetlinkError):
        table = None  # a kernel without nftables: not knowable, not an error
    return {"to": spec.handoff_to, "table": table}
