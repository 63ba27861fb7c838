"""keepalived for ACTIVE_STANDBY instances: one VRRP-only process per instance namespace.

Like HAProxy, the config comes rendered from the controller; the agent checks it
(`keepalived -t`), writes it atomically, starts keepalived inside the instance's
namespace with its own pid files, and reloads it with SIGHUP. The VRRP state is
whatever the config's notify script last wrote to `InstancePaths.vrrp_state_file`;
whether HAProxy serves goes the other way, through the track file
(`InstancePaths.haproxy_down`) keepalived watches.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from openha.agent.haproxy import atomic_write, summarize_errors
from openha.agent.netns import NamespaceExec
from openha.agent.paths import InstancePaths
from openha.agent.procs import pid_alive, pid_from_file
from openha.agent.sandbox import KEEPALIVED_CAPS, InstanceSandbox

KEEPALIVED_BIN = shutil.which("keepalived") or "/usr/sbin/keepalived"


class KeepalivedError(Exception):
    pass


_SCRIPT_USER = re.compile(r"^(\s*script_user)\s.*$", re.MULTILINE)


def checkable(config: str) -> str:
    """`config` as `keepalived -t` can check it.

    keepalived 2.2's config test kills itself (SIGTERM, no message) whenever a script is
    configured with a `script_user` other than root, while the daemon runs the very same
    config and its scripts as that user: the test reads the config with root there,
    everything else unchanged.
    """
    return _SCRIPT_USER.sub(r"\1 root", config)


class KeepalivedInstance:
    def __init__(
        self, paths: InstancePaths, namespace: str, sandbox: InstanceSandbox | None = None
    ) -> None:
        self.paths = paths
        self.namespace = namespace
        # The sandbox gives keepalived the instance's cgroup and a bounding set cut to
        # what VRRP needs (its scripts run as the host's unprivileged script user).
        self.sandbox = sandbox

    def pid(self) -> int | None:
        return pid_from_file(self.paths.keepalived_pid, self.paths.keepalived_config)

    def vrrp_state(self) -> str | None:
        try:
            return self.paths.vrrp_state_file.read_text().strip().upper() or None
        except OSError:
            return None

    def set_haproxy_down(self, down: bool) -> bool:
        """Tell keepalived (its track file) whether this instance's HAProxy is down;
        True when that changed what the file said."""
        value = "1\n" if down else "0\n"
        with contextlib.suppress(OSError):
            if self.paths.haproxy_down.read_text() == value:
                return False
        atomic_write(self.paths.haproxy_down, value, 0o600)
        return True

    def validate(self, config: str) -> str | None:
        with tempfile.NamedTemporaryFile("w", dir=self.paths.instance_dir, suffix=".conf") as fh:
            fh.write(checkable(config))
            fh.flush()
            proc = subprocess.run(
                [KEEPALIVED_BIN, "-t", "-f", fh.name],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        if proc.returncode == 0:
            return None
        return summarize_errors(proc.stderr + proc.stdout)

    def apply(self, config: str, force: bool = False, validated: bool = False) -> None:
        """Validate (unless the caller just did: `validated`), write, then start or
        reload (SIGHUP) keepalived.

        `force` reloads even when the file already says `config`: after an apply was
        cut short, the file may be newer than what keepalived read.
        """
        current = None
        with contextlib.suppress(FileNotFoundError):
            current = self.paths.keepalived_config.read_text()
        pid = self.pid()
        if current == config and pid is not None and not force:
            return
        error = None if validated else self.validate(config)
        if error:
            raise KeepalivedError(error)
        atomic_write(self.paths.keepalived_config, config, 0o600)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
        else:
            self.start()

    def start(self) -> None:
        if self.pid() is not None or not self.paths.keepalived_config.exists():
            return
        cmd = [
            KEEPALIVED_BIN,
            "--vrrp",
            "-f",
            str(self.paths.keepalived_config),
            "-p",
            str(self.paths.keepalived_pid),
            "-r",
            str(self.paths.vrrp_pid),
        ]
        with contextlib.ExitStack() as stack:
            nsexec = stack.enter_context(NamespaceExec(self.namespace))
            preexec = (
                stack.enter_context(self.sandbox.spawn(nsexec, caps=KEEPALIVED_CAPS))
                if self.sandbox is not None
                else nsexec
            )
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=preexec,
                cwd=self.paths.instance_dir,
                timeout=30,
            )
        if proc.returncode != 0:
            raise KeepalivedError(f"keepalived exited with {proc.returncode}")
        deadline = time.monotonic() + 5
        while self.pid() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pid() is None:
            raise KeepalivedError("keepalived did not start")

    def stop(self, timeout: float = 5.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
