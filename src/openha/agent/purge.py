"""Remove everything OpenHA made on a host: namespaces, processes, links, files.

With an agent directory, only that agent's instances (their cgroups and uids too)
and its directory go; with `everything=True`, every `ohi-*` namespace and the
processes inside it, every `ohv*` veth, and every bridge/VLAN link carrying the
`openha:managed` alias, whichever agent made them. Used by `openha purge`, the demo's
cleanup and tests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from pyroute2 import IPRoute, netns

from openha.agent import keeper, keyfiles, sandbox, state
from openha.agent.netns import (
    MANAGED_ALIAS,
    VETH_PREFIX,
    delete_network,
    namespace_pids,
    remove_namespace,
)
from openha.agent.paths import NAMESPACE_PREFIX, instance_paths, log_paths, namespace_name
from openha.agent.procs import pid_alive
from openha.agent.syslogd import Syslogd

log = logging.getLogger(__name__)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.02)


def _pids_from(pid_file: Path) -> list[int]:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [pid] if pid_alive(pid) else []


def purge(
    agent_dir: Path | None, everything: bool = False, keys_dir: Path | None = None
) -> list[str]:
    """Remove what OpenHA made; returns the namespaces removed.

    With `agent_dir`: that agent's instances (processes, namespaces, links, instance
    directories), its rsyslogd and every log file; its identity (secret, host id)
    stays unless `everything`.
    With `everything`: also the whole agent directory and every `ohi-*` namespace,
    `ohv*` veth and managed bridge on the host. The agent's certificate keys (its
    tmpfs, `keys_dir` when it is not the default) go with its instances; with
    `everything`, every agent's.
    """
    removed: list[str] = []
    bridges: list[str] = []
    if agent_dir is not None and agent_dir.exists():
        keeper.stop(agent_dir)
        for instance_id in state.instance_ids(agent_dir):
            paths = instance_paths(agent_dir, instance_id)
            spec = state.load_spec(paths)
            try:
                ns = spec.namespace if spec else namespace_name(instance_id)
            except ValueError:
                ns = None
            pids: list[int] = []
            for pid_file in (paths.pid_file, paths.keepalived_pid, paths.vrrp_pid):
                pids += _pids_from(pid_file)
            if ns:
                pids += namespace_pids(ns)
            _kill(pids)
            if spec:
                bridges += [iface.bridge for iface in spec.interfaces]
            if ns:
                delete_network(ns)
                removed.append(ns)
            for problem in sandbox.purge_instance(paths):
                log.error("cgroup left behind: %s", problem)
            shutil.rmtree(paths.instance_dir, ignore_errors=True)
        keyfiles.release(keys_dir or keyfiles.default_keys_dir(agent_dir))
        # The agent's rsyslogd, its queues and every load balancer's log files.
        logs = log_paths(agent_dir)
        Syslogd(logs.syslog_dir).stop()
        shutil.rmtree(logs.syslog_dir, ignore_errors=True)
        shutil.rmtree(logs.logs_root, ignore_errors=True)
        if everything:
            shutil.rmtree(agent_dir, ignore_errors=True)
    if everything:
        if keyfiles.KEYS_ROOT.is_dir():
            for found in keyfiles.KEYS_ROOT.iterdir():
                keyfiles.release(found)
        for ns in netns.listnetns():
            if ns.startswith(NAMESPACE_PREFIX):
                _kill(namespace_pids(ns))
                delete_network(ns)
                removed.append(ns)
    with IPRoute() as ipr:
        links = ipr.get_links()
        for link in links:
            name = link.get("ifname") or ""
            if everything and name.startswith(VETH_PREFIX) and link.get("kind") != "bridge":
                with contextlib.suppress(Exception):
                    ipr.link("del", index=link["index"])
    # Managed bridges go only when nothing foreign is attached (or when purging everything).
    with IPRoute() as ipr:
        links = ipr.get_links()
        managed = {
            link["index"]: link.get("ifname")
            for link in links
            if link.get("ifalias") == MANAGED_ALIAS and _kind(link) == "bridge"
        }
        for index, name in managed.items():
            if not everything and name not in bridges:
                continue
            ports = [link for link in links if link.get("master") == index]
            if any(p.get("ifalias") != MANAGED_ALIAS for p in ports) and not everything:
                continue
            for port in ports:
                if port.get("ifalias") == MANAGED_ALIAS:
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=port["index"])
            with contextlib.suppress(Exception):
                ipr.link("del", index=index)
        if everything:
            for link in ipr.get_links():
                if link.get("ifalias") == MANAGED_ALIAS:  # VLAN links left on their own
                    with contextlib.suppress(Exception):
                        ipr.link("del", index=link["index"])
    for ns in removed:
        remove_namespace(ns)
    return removed


def _kind(link: object) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None
