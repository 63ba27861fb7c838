"""Host limits a thousand instances need, raised (never lowered) when the agent starts.

- Descriptors: the agent holds a log socket, a log file and a pidfd per instance, more
  than the usual soft limit of 1024; HAProxy processes inherit the limit and raise
  their own as their maxconn needs.
- The kernel's neighbour (ARP/NDP) table is one table for every namespace, with the
  limits of the initial namespace: by default 1024 entries at most (`gc_thresh3`). Each
  instance namespace holds entries for its members, gateway and clients, so a host of
  a thousand load balancers overflows it and new neighbours cannot be resolved (found
  by bench/density.py: the thousandth VIP stopped answering).
- The per-CPU input backlog (`net.core.netdev_max_backlog`, default 1000 packets). A
  broadcast on a bridge (an ARP request) is copied to every port, and each copy a veth
  carries is queued on that backlog before any is processed: with a thousand instance
  ports on one bridge, the copies past the thousandth are dropped. The bridge floods
  its newest ports first, so the oldest ports (the backends and routers every new
  instance must resolve) are the ones that never hear it: bench/scale.py's last four
  load balancers of a thousand never reached their members, with millions of drops in
  /proc/net/softnet_stat. A Linux bridge takes at most 1024 ports, so a backlog well
  above that keeps a full bridge's flood, several at once, whole.
- inotify instances per user (`fs.inotify.max_user_instances`, default 128). Every
  keepalived of a pair tracks its instance's file through an inotify instance of its
  own, and the agent's log janitor needs one (`agent.dirwatch`): 200 pairs on three
  hosts had used them all up on this machine, and the next ones got EMFILE.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger(__name__)

NETDEV_BACKLOG = Path("/proc/sys/net/core/netdev_max_backlog")
# Room for a few full-bridge floods (1024 ports) queued at once on one CPU.
NETDEV_BACKLOG_MIN = 16384

INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
# A keepalived per instance of a thousand, and then some (root owns them all).
INOTIFY_INSTANCES_MIN = 8192

NEIGH_DIRS = (
    Path("/proc/sys/net/ipv4/neigh/default"),
    Path("/proc/sys/net/ipv6/neigh/default"),
)


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def neighbour_thresholds(entries: int) -> dict[str, int]:
    """gc_thresh1..3 for a neighbour table of at most `entries`, in the kernel's proportions.

    thresh3 is the hard maximum, thresh2 where garbage collection gets eager (the
    kernel's default is half of thresh3), thresh1 what is never collected (an eighth).
    """
    return {"gc_thresh1": entries // 8, "gc_thresh2": entries // 2, "gc_thresh3": entries}


def raise_neighbour_table(entries: int, dirs: tuple[Path, ...] = NEIGH_DIRS) -> list[str]:
    """Raise each neighbour-table threshold below `neighbour_thresholds(entries)`; what changed.

    Values the operator set higher stay. A kernel or namespace that does not expose a
    threshold (or refuses the write) is logged and left alone.
    """
    changed = []
    for base in dirs:
        for name, wanted in neighbour_thresholds(entries).items():
            path = base / name
            try:
                current = int(path.read_text())
                if current < wanted:
                    path.write_text(f"{wanted}\n")
                    changed.append(f"{path}: {current} -> {wanted}")
            except (OSError, ValueError) as exc:
                log.warning("cannot raise %s: %s", path, exc)
    for change in changed:
        log.info("raised %s", change)
    return changed


def raise_netdev_backlog(
    packets: int = NETDEV_BACKLOG_MIN, path: Path = NETDEV_BACKLOG
) -> str | None:
    """Raise the per-CPU input backlog to at least `packets`; what changed, if anything."""
    return _raise_to(path, packets)


def raise_inotify_instances(
    instances: int = INOTIFY_INSTANCES_MIN, path: Path = INOTIFY_INSTANCES
) -> str | None:
    """Raise the inotify instances a user may hold to at least `instances`; what changed."""
    return _raise_to(path, instances)


def _raise_to(path: Path, wanted: int) -> str | None:
    """A higher value the operator set stays; a refused write is logged and left alone."""
    try:
        current = int(path.read_text())
        if current >= wanted:
            return None
        path.write_text(f"{wanted}\n")
    except (OSError, ValueError) as exc:
        log.warning("cannot raise %s: %s", path, exc)
        return None
    change = f"{path}: {current} -> {wanted}"
    log.info("raised %s", change)
    return change
