"""Retiring an instance that a migration replaced: give the VIP away, keep its connections.

The VIP leaves the instance's VIP interface (or its keepalived stops, with the
priority-0 advert that hands the VIP to the peer at once) but stays on the
namespace's loopback, with `arp_ignore=1` on the VIP interface: the namespace no
longer answers ARP for it, yet the packets of connections it still serves (from
neighbours that have not heard the new owner's gratuitous ARP yet) are still
delivered. HAProxy then soft-stops (SIGUSR1): it stops listening, finishes what
it serves and exits. The agent removes the instance when the controller says so.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal

from pyroute2.netlink.exceptions import NetlinkError

from openha.agent.netns import ns_iproute, run_in_namespace
from openha.domain.spec import InstanceSpec

MARKER = "retiring"  # a file in the instance's directory: survives an agent restart


def release_vip(spec: InstanceSpec) -> None:
    """Move the VIP from the VIP interface to loopback; stop answering ARP for it."""
    vip = ipaddress.ip_address(spec.vip_address.split("/")[0])
    host_len = vip.max_prefixlen

    def quiet_arp() -> None:
        for name in ("all", spec.vip_interface):
            with open(f"/proc/sys/net/ipv4/conf/{name}/arp_ignore", "w") as fh:
                fh.write("1")

    if vip.version == 4:
        run_in_namespace(spec.namespace, quiet_arp)
    with ns_iproute(spec.namespace) as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        with contextlib.suppress(NetlinkError):  # already there
            ipr.addr("add", index=lo, address=str(vip), prefixlen=host_len)
        found = ipr.link_lookup(ifname=spec.vip_interface)
        if found and not spec.vip_managed_by_keepalived:
            for msg in ipr.get_addr(index=found[0]):
                if msg.get("address") == str(vip):
                    with contextlib.suppress(NetlinkError):
                        ipr.addr(
                            "del", index=found[0], address=str(vip), prefixlen=msg["prefixlen"]
                        )


def soft_stop(pids: list[int]) -> None:
    """HAProxy's soft stop: close the listeners, finish the connections, exit."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)
