"""Handing connections that a VIP move left behind back to the instance that owns them.

When a migration moves a VIP (a SINGLE load balancer's switch, a pair's retiring
half), neighbours learn the new owner from a gratuitous ARP while some of their
connections were opened with the old one. The next segments of those connections
reach the new instance, whose kernel knows no such connection and answers with a
reset: a request in flight is lost, a long download cut. While its spec names the
instance being retired (`InstanceSpec.handoff_to`), the new instance's namespace
hands those segments on instead:

- conntrack tracks the namespace's connections, with `tcp_loose=0` so that it never
  adopts one it did not see open: a segment to the VIP that opens nothing and belongs
  to no connection of this instance is "invalid". `tcp_be_liberal=1` keeps it from
  calling a segment of its own connections invalid for a window it misjudged (only an
  out-of-window reset is, and handing a reset on is harmless).
- nftables' `dup` sends such a segment, unchanged, to the retiring instance's own
  address on the VIP's link, and the original is dropped. The retiring instance keeps
  the VIP on its loopback (`agent.retire`), so its kernel delivers the segment to the
  connection it belongs to and answers the client directly.

A new connection begins with a SYN, which conntrack tracks: it stays here. The table
goes when the retired instance is removed (the spec no longer names it), and with it
the cost of tracking connections.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
from pathlib import Path

from pyroute2.nftables.main import NFTables

from openha.agent.netns import NamespaceExec, run_in_namespace

log = logging.getLogger(__name__)

TABLE = "openha_handoff"
PROC_SYS = Path("/proc/sys/net/netfilter")
# Written once the table exists: with nftables as modules, its `ct` expression is what
# loads conntrack and brings these files into the namespace.
CONNTRACK_SYSCTLS = {"nf_conntrack_tcp_loose": "0", "nf_conntrack_tcp_be_liberal": "1"}
NFT_TIMEOUT = 10.0


class HandoffError(Exception):
    """The kernel or nft refused the hand-off table."""


def ruleset(vip: str, target: str) -> str:
    """The table that hands segments of unknown connections to the VIP on to `target`.

    Only `ipaddress` renderings reach the text. No device is named: the route to
    `target` picks it, so a rebuilt interface (a new index) needs no new table.
    """
    vip_ip, target_ip = ipaddress.ip_address(vip), ipaddress.ip_address(target)
    if vip_ip.version != target_ip.version:
        raise HandoffError(f"the VIP {vip_ip} and {target_ip} are not of one IP version")
    family = _family(vip)
    # `add` then `delete` makes the load an atomic replacement whether or not it exists.
    return (
        f"add table {family} {TABLE}\n"
        f"delete table {family} {TABLE}\n"
        f"table {family} {TABLE} {{\n"
        "\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
        f"\t\t{family} daddr {vip_ip} meta l4proto tcp ct state invalid dup to {target_ip} drop\n"
        "\t}\n"
        "}\n"
    )


def _family(vip: str) -> str:
    return "ip" if ipaddress.ip_address(vip).version == 4 else "ip6"


def table_present(namespace: str) -> bool:
    """Whether the namespace has the hand-off table: a netlink dump, no process."""

    def dump() -> bool:
        with NFTables() as nft:
            return any(t.get_attr("NFTA_TABLE_NAME") == TABLE for t in nft.get_tables())

    return run_in_namespace(namespace, dump)


def _nft(namespace: str, script: str) -> None:
    nft = shutil.which("nft")
    if nft is None:
        raise HandoffError("nft is not installed (Debian package nftables)")
    with NamespaceExec(namespace) as nsexec:
        done = subprocess.run(
            [nft, "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            preexec_fn=nsexec,
            timeout=NFT_TIMEOUT,
            check=False,
        )
    if done.returncode != 0:
        raise HandoffError(f"nft refused the hand-off table: {done.stderr.strip()[:500]}")


def _set_conntrack() -> None:
    # /proc/sys/net resolves against the calling thread's namespace.
    for name, value in CONNTRACK_SYSCTLS.items():
        path = PROC_SYS / name
        if path.read_text().strip() != value:
            path.write_text(f"{value}\n")


def converge(namespace: str, vip: str, target: str | None, *, vip_held: bool) -> bool:
    """Hand unknown connections to `target` (an address), or to no one; True if it changed.

    Conntrack must have seen every connection to the VIP open: one it did not would
    look unknown and be handed away, that is reset. So the table is started only
    while the namespace does not hold the VIP (`vip_held`), as a migration's new
    instance (staged) or a pair's standby (before its peer gives the VIP away) does;
    once there, it is kept and replaced atomically.

    Raises HandoffError when the kernel or nft refuses: the caller keeps serving
    without it (a move then resets the connections in flight, as without hand-off).
    """
    vip = vip.split("/")[0]
    present = table_present(namespace)
    if target is None:
        if not present:
            return False
        _nft(namespace, f"delete table {_family(vip)} {TABLE}\n")
        log.info("namespace %s: hand-off table removed", namespace)
        return True
    if not present and vip_held:
        log.info("namespace %s: holds the VIP already, no hand-off to %s", namespace, target)
        return False
    _nft(namespace, ruleset(vip, target))
    try:
        run_in_namespace(namespace, _set_conntrack)
    except OSError as exc:
        raise HandoffError(f"conntrack settings refused: {exc}") from exc
    if not present:
        log.info("namespace %s: connections unknown here go to %s", namespace, target)
    return not present
