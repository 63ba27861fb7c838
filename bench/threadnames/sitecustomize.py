"""Names each Python thread of a benchmarked process in /proc (`comm`), for its CPU.

bench/fleetworld.py puts this directory on the PYTHONPATH of the processes it
starts: Python 3.11 leaves every thread named after the process, so their CPU
(/proc/<pid>/task/<tid>/stat) could not be told apart. Benchmark-only.
"""

from __future__ import annotations

import ctypes
import threading

_PR_SET_NAME = 15
_libc = ctypes.CDLL(None, use_errno=True)
_bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _named(self: threading.Thread) -> None:
    _libc.prctl(_PR_SET_NAME, self.name.encode()[:15], 0, 0, 0)
    _bootstrap(self)


threading.Thread._bootstrap_inner = _named  # type: ignore[attr-defined]
