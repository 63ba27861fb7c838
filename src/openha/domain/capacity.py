"""How many load balancers a host can carry, from what its agent reports about it.

One place for the per-LB costs the scheduler plans with. The figures are
measured, not guessed: update them here when the data plane's density changes.
"""

from __future__ import annotations

MIB = 1024 * 1024

# An idle HAProxy instance costs ~6.6 MB PSS (shared pages counted once across the
# host), measured on Debian 12's HAProxy 2.6 with 500 LBs on one host (issue 8);
# density tuning aims at <= 5 MB. 7 MiB leaves room for buffers under moderate load.
MEMORY_PER_LB = 7 * MIB
# Kept for the kernel, the agent, keepalived and the page cache.
MEMORY_RESERVED = 1024 * MIB

# An idle instance holds ~20 descriptors (listeners, CLI and log sockets, pipes,
# epoll); each proxied connection holds two. 1,000 plans for ~500 concurrent
# connections per LB on average across the host (a busy one takes more, most idle).
FDS_PER_LB = 1000
# Kept for everything else on the host.
FDS_RESERVED = 65536

# When an agent reports neither a figure of its own nor the facts to derive one.
DEFAULT_CAPACITY = 100
MAX_CAPACITY = 1_000_000


def capacity_for(memory_bytes: int | None, fd_limit: int | None) -> int:
    """Load balancers a host with this much memory and this system-wide descriptor
    limit can carry: the scarcer of the two resources decides."""
    bounds = []
    if memory_bytes:
        bounds.append(max(memory_bytes - MEMORY_RESERVED, 0) // MEMORY_PER_LB)
    if fd_limit:
        bounds.append(max(fd_limit - FDS_RESERVED, 0) // FDS_PER_LB)
    if not bounds:
        return DEFAULT_CAPACITY
    return int(min(min(bounds), MAX_CAPACITY))
