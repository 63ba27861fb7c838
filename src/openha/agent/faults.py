"""Named crash points for fault-injection tests; off unless an environment variable names one.

Tests prove that a restart converges from the worst moments of an apply or a delete
(the config swapped but the runtime commands not yet sent, HAProxy stopped but the
instance not yet removed). An agent started with `OPENHA_AGENT_CRASH_AT=<point>`
SIGKILLs itself when it reaches that point, exactly as an operator's `kill -9` would:
no cleanup, no `finally`. Without the variable a crash point is a dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

CRASH_AT_ENV = "OPENHA_AGENT_CRASH_AT"

# After haproxy.cfg holds a new config, before HAProxy was told (runtime commands or reload).
HAPROXY_CONFIG_WRITTEN = "haproxy-config-written"
# After the runtime commands or the reload took, before the agent recorded it.
HAPROXY_CHANGES_SENT = "haproxy-changes-sent"
# During a delete: HAProxy is stopped, the instance directory and namespace still exist.
DELETE_HAPROXY_STOPPED = "delete-haproxy-stopped"

POINTS = frozenset([HAPROXY_CONFIG_WRITTEN, HAPROXY_CHANGES_SENT, DELETE_HAPROXY_STOPPED])


def crash_point(name: str) -> None:
    """SIGKILL this process if the environment asks to crash at `name`."""
    assert name in POINTS, name
    if os.environ.get(CRASH_AT_ENV) == name:
        log.error("fault injection: crashing at %s", name)
        os.kill(os.getpid(), signal.SIGKILL)
