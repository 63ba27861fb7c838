"""The agent's supervision and a HAProxy reloaded by someone else (`_reload_settles`).

A new HAProxy tells its predecessor to go before it writes its pid file; the
predecessor's exit in between must not read as a crash while the new one lives.
"""

from __future__ import annotations

from types import SimpleNamespace

from openha.agent.service import AgentService


class _HAProxy:
    def __init__(self, processes: list[int], named_after: int | None) -> None:
        self._processes = processes
        self._named_after = named_after  # running() turns True at this call (None: never)
        self.calls = 0

    def processes(self) -> list[int]:
        return self._processes

    def running(self) -> bool:
        self.calls += 1
        return self._named_after is not None and self.calls >= self._named_after


def _settles(haproxy: _HAProxy, wait: float = 1.0) -> bool:
    return AgentService._reload_settles(SimpleNamespace(haproxy=haproxy), wait)  # type: ignore[arg-type]


def test_a_new_process_that_writes_its_pid_file_soon_is_adopted() -> None:
    haproxy = _HAProxy([4242], named_after=3)
    assert _settles(haproxy)
    assert haproxy.calls == 3


def test_no_process_left_is_a_crash_at_once() -> None:
    haproxy = _HAProxy([], named_after=1)
    assert not _settles(haproxy)
    assert haproxy.calls == 0  # nothing to wait for


def test_a_process_that_never_names_itself_is_waited_for_only_so_long() -> None:
    haproxy = _HAProxy([4242], named_after=None)
    assert not _settles(haproxy, wait=0.2)
    assert haproxy.calls >= 2
