"""Network plumbing of instance namespaces, with pyroute2 only (no `ip` subprocesses).

An instance lives in namespace `ohi-<uuid hex>`; each `InterfaceSpec` is a veth pair
whose host side joins a host bridge and whose inside end carries the interface name,
MTU and addresses. Host interface names are limited to 15 characters, so the host
side is `ohv<tag><leg>` with a 10-hex-digit tag taken from the instance's uuid, and
carries the ifalias `openha:<namespace>` that says whose it is: two instances whose
uuids share their first 10 hex digits get different tags (the second takes the next
free candidate), and a link is only ever changed or deleted by its owner. The agent
plumbs the VIP itself unless keepalived owns it. Everything here is idempotent:
applying the same spec twice changes nothing, a changed spec converges. Bridges and
VLAN links the agent creates carry the ifalias `openha:managed` so they can be told
apart from the operator's own, even after the agent lost its state (see `purge`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import ipaddress
import logging
import os
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pyroute2 import IPRoute, netns
from pyroute2.netlink import NETLINK_ROUTE
from pyroute2.netlink.exceptions import NetlinkError

from openha.agent.paths import NAMESPACE_PREFIX
from openha.domain.spec import InstanceSpec, InterfaceSpec

log = logging.getLogger(__name__)

MANAGED_ALIAS = "openha:managed"
# An instance namespace's loopback carries `openha:instance:<instance directory>`.
OWNER_ALIAS_PREFIX = "openha:instance:"
VETH_PREFIX = "ohv"
IFNAMSIZ = 15
NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000  # <sched.h>
_T = TypeVar("_T")


class NetworkError(Exception):
    """The host cannot plumb what the spec asks (missing bridge, bad name, ...)."""


# --- namespaces -------------------------------------------------------------------------


def namespace_exists(name: str) -> bool:
    # A stat, not a listing: supervision asks this of every instance every second.
    return bool(name) and "/" not in name and os.path.exists(os.path.join(NETNS_DIR, name))


def ensure_namespace(name: str, owner: str | None = None) -> bool:
    """Create namespace `name` unless it exists; True when created.

    As `ip netns add` does, minus the fork pyroute2's `netns.create` makes (a fork of
    an agent carrying a thousand instances costs more than the namespace): a
    throwaway thread unshares its network namespace and bind-mounts it under
    /var/run/netns, which keeps the namespace after the thread is gone. With `owner`
    (an instance directory) the namespace is marked as its own before it gets a name,
    so no one ever sees it unmarked (see `namespace_owner`).
    """
    if namespace_exists(name):
        return False

    def unshare_and_attach() -> None:
        if _libc().unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare: {os.strerror(err)}", name)
        if owner is not None:
            with IPRoute() as ipr:  # opened by this thread: inside the new namespace
                _mark_loopback(ipr, owner)
        netns.attach(name, "thread-self")

    _in_thread(f"netns-new-{name}", unshare_and_attach)
    return True


def owner_alias(owner: str) -> str:
    """The loopback ifalias naming the instance directory a namespace belongs to."""
    return f"{OWNER_ALIAS_PREFIX}{owner}"


def _mark_loopback(ipr: IPRoute, owner: str) -> None:
    lo = ipr.link_lookup(ifname="lo")[0]
    if _alias(ipr, lo) != owner_alias(owner):
        ipr.link("set", index=lo, ifalias=owner_alias(owner))


def mark_namespace(name: str, owner: str) -> None:
    """Mark namespace `name` as instance directory `owner`'s (made before marks existed)."""
    with ns_iproute(name) as nsr:
        _mark_loopback(nsr, owner)


def namespace_owner(name: str) -> str | None:
    """The instance directory namespace `name` names as its owner (None: unmarked or gone).

    Several agents may share a host (labs, tests, a migration), and namespaces are
    host-wide: the mark is how any of them tells another agent's instance from a stray.
    """
    try:
        with ns_iproute(name) as nsr:
            lo = nsr.link_lookup(ifname="lo")
            alias = _alias(nsr, lo[0]) if lo else None
    except (OSError, NetlinkError):
        return None
    if alias is None or not alias.startswith(OWNER_ALIAS_PREFIX):
        return None
    return alias.removeprefix(OWNER_ALIAS_PREFIX)


def remove_namespace(name: str) -> None:
    if namespace_exists(name):
        netns.remove(name)


@contextlib.contextmanager
def ns_iproute(name: str) -> Iterator[IPRoute]:
    """Netlink socket inside `name` (a missing namespace is an error, not created).

    The socket is opened by a thread that joined the namespace (sockets keep the
    namespace they were made in) rather than by the child process `IPRoute(netns=…)`
    forks for it.
    """
    sock = run_in_namespace(
        name, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    )
    ipr = IPRoute(fileno=sock.detach())
    try:
        yield ipr
    finally:
        ipr.close()


def run_in_namespace(name: str, fn: Callable[[], _T]) -> _T:
    """Run `fn` in a throwaway thread that joined namespace `name`.

    setns(CLONE_NEWNET) moves only the calling thread, and sockets keep the namespace
    they were created in, so this is a cheap way to get a socket inside a namespace
    without forking.
    """

    def joined() -> _T:
        netns.setns(name, flags=0)
        return fn()

    return _in_thread(f"netns-{name}", joined)


def _in_thread(thread_name: str, fn: Callable[[], _T]) -> _T:
    """`fn()` in a thread of its own, whose namespace changes die with it."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=thread_name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return cast(_T, box["value"])


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


class NamespaceExec:
    """`preexec_fn` that moves a child process into a namespace before it execs.

    The namespace file is opened in the parent so that the child, which must not do
    much between fork and exec, makes a single setns syscall on an inherited fd.
    Use as a context manager around `subprocess.Popen(..., preexec_fn=nsexec)`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
        # Load libc in the parent: the child must not dlopen anything after fork.
        netns._get_libc()

    def __call__(self) -> None:
        netns.setns(self.fd, flags=0, fork=False)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> NamespaceExec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def namespace_pids(name: str) -> list[int]:
    """Pids of processes whose network namespace is `name`."""
    try:
        target = os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                pids.append(int(entry))
        except OSError:
            continue
    return pids


# --- names ---------------------------------------------------------------------------

TAG_DIGITS = 10
MAX_LEGS = 100  # "ohv" + 10-digit tag + a leg index of at most 2 digits = IFNAMSIZ
TAG_CANDIDATES = 8
_TAG_RE = re.compile(rf"^[0-9a-f]{{{TAG_DIGITS}}}")


def veth_owner(namespace: str) -> str:
    """The ifalias marking a host veth as the instance's own."""
    return f"openha:{namespace}"


def tag_candidates(namespace: str) -> list[str]:
    """Tags an instance's host veths may use, in order of preference.

    The first is the uuid's first 10 hex digits (readable: `ohv8c0e5a1e11…`); the
    others are derived by hashing, for when another instance holds the first.
    """
    own = _TAG_RE.match(namespace.removeprefix(NAMESPACE_PREFIX))
    tags = [own.group(0)] if own else []
    k = 0
    while len(tags) < TAG_CANDIDATES:
        k += 1
        tags.append(hashlib.sha256(f"{namespace}#{k}".encode()).hexdigest()[:TAG_DIGITS])
    return tags


def host_veth_name(tag: str, idx: int) -> str:
    if not 0 <= idx < MAX_LEGS:
        raise NetworkError(f"an instance has at most {MAX_LEGS} interfaces")
    return f"{VETH_PREFIX}{tag}{idx}"


def find_tag(ipr: IPRoute, namespace: str) -> tuple[str | None, str | None]:
    """(the tag the instance's veths use, the first tag free for it); either may be None.

    A tag is the instance's when its first leg carries the instance's alias, and free
    when no link has that name; a name held by another instance is skipped.
    """
    owner = veth_owner(namespace)
    free = None
    for tag in tag_candidates(namespace):
        index = _lookup(ipr, host_veth_name(tag, 0))
        if index is None:
            free = free or tag
        elif _alias(ipr, index) == owner:
            return tag, free
    return None, free


def owned_host_links(namespace: str) -> list[str]:
    """Names of the host links carrying the instance's alias (a full dump: tests, diagnosis)."""
    owner = veth_owner(namespace)
    with IPRoute() as ipr:
        return [
            link.get("ifname") or "" for link in ipr.get_links() if link.get("ifalias") == owner
        ]


def vlan_link_name(parent: str, vlan_id: int) -> str:
    suffix = f".{vlan_id}"
    return parent[: IFNAMSIZ - len(suffix)] + suffix


def _check_ifname(name: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or name.strip() != name:
        raise NetworkError(f"invalid interface name: {name!r}")


# --- host side: bridges, VLANs ----------------------------------------------------------


def _lookup(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _alias(ipr: IPRoute, index: int) -> str | None:
    alias = ipr.get_links(index)[0].get("ifalias")
    return str(alias) if alias is not None else None


def ensure_bridge(ipr: IPRoute, iface: InterfaceSpec) -> int:
    """Index of the host bridge for `iface`, creating bridge/VLAN link when allowed."""
    _check_ifname(iface.bridge)
    bridge = _lookup(ipr, iface.bridge)
    if bridge is None:
        if not iface.bridge_managed:
            raise NetworkError(f"host bridge {iface.bridge} does not exist")
        ipr.link("add", ifname=iface.bridge, kind="bridge")
        bridge = _lookup(ipr, iface.bridge)
        assert bridge is not None
        ipr.link("set", index=bridge, ifalias=MANAGED_ALIAS)
        log.info("created bridge %s", iface.bridge)
    if iface.vlan_parent and iface.vlan_id is not None:
        parent = _lookup(ipr, iface.vlan_parent)
        if parent is None:
            raise NetworkError(f"VLAN parent interface {iface.vlan_parent} does not exist")
        name = vlan_link_name(iface.vlan_parent, iface.vlan_id)
        vlan = _lookup(ipr, name)
        if vlan is None:
            ipr.link("add", ifname=name, kind="vlan", link=parent, vlan_id=iface.vlan_id)
            vlan = _lookup(ipr, name)
            assert vlan is not None
            ipr.link("set", index=vlan, ifalias=MANAGED_ALIAS)
            log.info("created VLAN link %s", name)
        if ipr.get_links(vlan)[0].get("master") != bridge:
            ipr.link("set", index=vlan, master=bridge)
        ipr.link("set", index=vlan, state="up")
        ipr.link("set", index=parent, state="up")
    if _alias(ipr, bridge) == MANAGED_ALIAS:
        ipr.link("set", index=bridge, state="up")
    return bridge


def remove_unused_bridges(names: list[str]) -> list[str]:
    """Delete the managed bridges among `names` that nothing else is attached to.

    Their managed VLAN links go with them. Returns the bridges removed.
    """
    removed = []
    with IPRoute() as ipr:
        for name in set(names):
            index = _lookup(ipr, name)
            if index is None or _alias(ipr, index) != MANAGED_ALIAS:
                continue
            ports = [link for link in ipr.get_links() if link.get("master") == index]
            if any(link.get("ifalias") != MANAGED_ALIAS for link in ports):
                continue  # something we did not make is still attached
            for link in ports:
                ipr.link("del", index=link["index"])
            ipr.link("del", index=index)
            removed.append(name)
            log.info("removed bridge %s", name)
    return removed


# --- inside the namespace ---------------------------------------------------------------


def _addr_key(address: str) -> tuple[str, int]:
    iface = ipaddress.ip_interface(address)
    return str(iface.ip), iface.network.prefixlen


def _vip_cidr(vip: str) -> str:
    if "/" in vip:
        return vip
    ip = ipaddress.ip_address(vip)
    return f"{ip}/{ip.max_prefixlen}"


def _desired_addresses(spec: InstanceSpec, iface: InterfaceSpec) -> set[tuple[str, int]]:
    wanted = {_addr_key(a) for a in iface.addresses}
    if iface.name == spec.vip_interface and not spec.vip_managed_by_keepalived:
        vip_ip, vip_len = _addr_key(_vip_cidr(spec.vip_address))
        # An address already carrying the VIP (e.g. with the subnet prefix) is enough.
        if not any(ip == vip_ip for ip, _ in wanted):
            wanted.add((vip_ip, vip_len))
    return wanted


def _current_addresses(nsr: IPRoute, index: int) -> set[tuple[str, int]]:
    current = set()
    for msg in nsr.get_addr(index=index):
        ip = msg.get("address")
        if ip is None:
            continue
        if ipaddress.ip_address(ip).is_link_local:
            continue  # the kernel's own IPv6 link-local address
        current.add((ip, msg["prefixlen"]))
    return current


@dataclass
class NetworkResult:
    created_namespace: bool = False
    vip_added: bool = False
    changed: bool = False
    garp_sent: bool = False  # a gratuitous ARP announced the VIP (diagnostics record it)


def apply_network(spec: InstanceSpec, owner: str) -> NetworkResult:
    """Make the namespace of `spec` look exactly like its interfaces say; `owner` is the
    instance directory the namespace is marked with (`namespace_owner`)."""
    try:
        return _apply_network(spec, owner)
    except NetlinkError as exc:
        # e.g. EOPNOTSUPP for a VLAN on a kernel without 8021q: the caller reports it.
        raise NetworkError(f"netlink refused a change: {exc}") from exc


def _allow_nonlocal_bind() -> None:
    # /proc/sys/net resolves against the calling thread's namespace.
    for path in ("/proc/sys/net/ipv4/ip_nonlocal_bind", "/proc/sys/net/ipv6/ip_nonlocal_bind"):
        with open(path, "r+") as fh:
            if fh.read().strip() != "1":
                fh.seek(0)
                fh.write("1")


def _delete_link(ipr: IPRoute, index: int) -> None:
    """Delete a link that may vanish by itself meanwhile. A veth whose peer sits in a
    namespace deleted while processes held it goes when the kernel frees that
    namespace, after its last process exits, in a cleanup run of the kernel's own
    (`cleanup_net`): between a lookup and this delete, if that process was just
    stopped."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def _instance_tag(ipr: IPRoute, namespace: str) -> str:
    tag, free = find_tag(ipr, namespace)
    if tag is None and free is None:
        raise NetworkError(f"every host interface name for {namespace} is taken")
    return tag or str(free)


def _apply_network(spec: InstanceSpec, owner_dir: str) -> NetworkResult:
    for iface in spec.interfaces:
        _check_ifname(iface.name)
    if len(spec.interfaces) > MAX_LEGS:
        raise NetworkError(f"an instance has at most {MAX_LEGS} interfaces")
    result = NetworkResult(created_namespace=ensure_namespace(spec.namespace, owner_dir))
    owner = veth_owner(spec.namespace)
    wanted_inside = {iface.name for iface in spec.interfaces}
    vip_ip = _addr_key(_vip_cidr(spec.vip_address))[0]
    if spec.vip_managed_by_keepalived:
        # The BACKUP's HAProxy must bind the VIP it does not hold yet (as amphorae do).
        run_in_namespace(spec.namespace, _allow_nonlocal_bind)
    with IPRoute() as ipr, ns_iproute(spec.namespace) as nsr:
        lo = nsr.link_lookup(ifname="lo")[0]
        if nsr.get_links(lo)[0].get("state") != "up":
            nsr.link("set", index=lo, state="up")
        _mark_loopback(nsr, owner_dir)  # namespaces made before marks existed get theirs
        tag = _instance_tag(ipr, spec.namespace)
        # Legs a previous spec had beyond this one's go first, so names can be reused.
        # Legs are numbered from 0 without gaps: look names up, never dump every link
        # of a host that carries a thousand instances.
        for idx in range(len(spec.interfaces), MAX_LEGS):
            index = _lookup(ipr, host_veth_name(tag, idx))
            if index is None or _alias(ipr, index) != owner:
                break
            _delete_link(ipr, index)
            result.changed = True
        for link in nsr.get_links():
            name = link.get("ifname") or ""
            if name != "lo" and name not in wanted_inside:
                nsr.link("del", index=link["index"])
                result.changed = True
        gateways: dict[int, str] = {}
        for idx, iface in enumerate(spec.interfaces):
            bridge = ensure_bridge(ipr, iface)
            host_name = host_veth_name(tag, idx)
            host = _lookup(ipr, host_name)
            if host is not None and _alias(ipr, host) != owner:
                raise NetworkError(f"host interface {host_name} belongs to another instance")
            inside = _lookup(nsr, iface.name)
            if host is None or inside is None:
                # Half-made pair (e.g. agent killed mid-apply): start this leg over.
                if host is not None:
                    _delete_link(ipr, host)
                if inside is not None:
                    nsr.link("del", index=inside)
                # The peer is created directly in the namespace, so its final name
                # (eth0...) cannot clash with the host's own interfaces.
                ipr.link(
                    "add",
                    ifname=host_name,
                    kind="veth",
                    peer={"ifname": iface.name, "net_ns_fd": spec.namespace},
                )
                host = _lookup(ipr, host_name)
                inside = _lookup(nsr, iface.name)
                assert host is not None and inside is not None
                # The kernel ignores an alias given with the new link: set it now.
                ipr.link("set", index=host, ifalias=owner)
                result.changed = True
            hlink = ipr.get_links(host)[0]
            if (
                hlink.get("master") != bridge
                or hlink.get("mtu") != iface.mtu
                or hlink.get("state") != "up"
            ):
                ipr.link("set", index=host, master=bridge, mtu=iface.mtu, state="up")
                result.changed = True
            ilink = nsr.get_links(inside)[0]
            if ilink.get("mtu") != iface.mtu or ilink.get("state") != "up":
                nsr.link("set", index=inside, mtu=iface.mtu, state="up")
                result.changed = True
            wanted = _desired_addresses(spec, iface)
            current = _current_addresses(nsr, inside)
            if spec.vip_managed_by_keepalived:
                # keepalived adds and removes the VIP itself: leave it alone.
                current = {a for a in current if a[0] != vip_ip}
            for ip, plen in current - wanted:
                nsr.addr("del", index=inside, address=ip, prefixlen=plen)
                result.changed = True
            # Primary addresses before the VIP so the VIP never becomes the source address.
            for ip, plen in sorted(wanted - current, key=lambda a: a[0] == vip_ip):
                nsr.addr("add", index=inside, address=ip, prefixlen=plen)
                result.changed = True
                if ip == vip_ip:
                    result.vip_added = True
            if iface.gateway:
                gateways[inside] = iface.gateway
        _converge_default_routes(nsr, gateways)
        if result.vip_added and ipaddress.ip_address(vip_ip).version == 4:
            vip_iface = _lookup(nsr, spec.vip_interface)
            if vip_iface is not None:
                mac = nsr.get_links(vip_iface)[0].get("address")
                try:
                    send_gratuitous_arp(spec.namespace, spec.vip_interface, vip_ip, mac)
                    result.garp_sent = True
                except OSError as exc:  # a missed GARP only delays neighbours' learning
                    log.warning("gratuitous ARP for %s failed: %s", vip_ip, exc)
    return result


def _converge_default_routes(nsr: IPRoute, gateways: dict[int, str]) -> None:
    wanted: dict[int, tuple[int, str]] = {}
    for index, gw in gateways.items():
        family = socket.AF_INET6 if ipaddress.ip_address(gw).version == 6 else socket.AF_INET
        wanted.setdefault(family, (index, gw))
    for family in (socket.AF_INET, socket.AF_INET6):
        current = [
            r
            for r in nsr.get_routes(family=family, table=254)
            if r["dst_len"] == 0 and r.get("gateway")
        ]
        want = wanted.get(family)
        ok = False
        for route in current:
            if want and route.get("gateway") == want[1] and route.get("oif") == want[0]:
                ok = True
                continue
            nsr.route("del", family=family, dst_len=0, gateway=route.get("gateway"), table=254)
        if want and not ok:
            dst = "0.0.0.0/0" if family == socket.AF_INET else "::/0"
            nsr.route("replace", dst=dst, gateway=want[1], oif=want[0])


def vip_present(spec: InstanceSpec) -> bool:
    """Whether the VIP is configured on its interface inside the namespace."""
    vip_ip = _addr_key(_vip_cidr(spec.vip_address))[0]
    with ns_iproute(spec.namespace) as nsr:
        index = _lookup(nsr, spec.vip_interface)
        if index is None:
            return False
        return any(ip == vip_ip for ip, _ in _current_addresses(nsr, index))


def send_gratuitous_arp(namespace: str, ifname: str, ip: str, mac: str, count: int = 2) -> None:
    """Announce `ip` at `mac` on `ifname` inside `namespace` (ARP request and reply)."""
    mac_b = bytes.fromhex(mac.replace(":", ""))
    ip_b = socket.inet_aton(ip)
    broadcast = b"\xff" * 6

    def frame(op: int) -> bytes:
        eth = broadcast + mac_b + struct.pack("!H", 0x0806)
        target_mac = broadcast if op == 2 else b"\x00" * 6
        arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac_b + ip_b + target_mac + ip_b
        return eth + arp

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
            sock.bind((ifname, 0))
            for _ in range(count):
                sock.send(frame(1))
                sock.send(frame(2))

    run_in_namespace(namespace, send)


def delete_network(namespace: str, bridges: list[str] | None = None) -> None:
    """Remove the namespace and its host veths, then managed bridges left empty."""
    owner = veth_owner(namespace)
    with IPRoute() as ipr:
        tag, _ = find_tag(ipr, namespace)
        for idx in range(MAX_LEGS if tag else 0):
            index = _lookup(ipr, host_veth_name(str(tag), idx))
            if index is None or _alias(ipr, index) != owner:
                break
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)
    remove_namespace(namespace)
    if bridges:
        remove_unused_bridges(bridges)
