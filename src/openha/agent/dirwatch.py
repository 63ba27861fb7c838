"""Hear of the next write into a quiet directory, once, without looking at it: inotify.

The log janitor keeps a thousand load balancers' files in bounds; looking at every
one twice a second costs more than all the rest of the agent, though most of them
write nothing for hours. A quiet directory gets a one-shot watch instead
(`IN_ONESHOT`): the kernel says so at the first line written into it (or file
created there), then forgets the watch, so a busy directory costs no event per line.
The caller looks at that directory again until it is quiet, then arms it again.

Python has no inotify binding: libc's three calls through ctypes. Where inotify is
missing or a watch cannot be added (the per-user watch limit), `arm` says so and the
caller keeps looking at that directory as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import struct

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_CREATE = 0x00000100
IN_MOVED_TO = 0x00000080
IN_ONESHOT = 0x80000000
IN_IGNORED = 0x00008000
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# A line written, or a file created or renamed into the directory (rsyslogd opening a
# new file after a rotation). Not our own renames out of it nor removals.
WRITTEN = IN_MODIFY | IN_CREATE | IN_MOVED_TO
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then the name, padded)


class DirWatch:
    """One-shot watches on directories, each under a key; `fired()` drains the events."""

    def __init__(self) -> None:
        self._fd = -1
        self._by_wd: dict[int, str] = {}
        self._wd_of: dict[str, int] = {}
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self._add = libc.inotify_add_watch
            self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
            self._rm = libc.inotify_rm_watch
            self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            return
        if fd < 0:
            log.warning("inotify unavailable: %s", os.strerror(ctypes.get_errno()))
            return
        self._fd = fd

    @property
    def available(self) -> bool:
        return self._fd >= 0

    def armed(self, key: str) -> bool:
        return key in self._wd_of

    def arm(self, key: str, path: str | os.PathLike[str]) -> bool:
        """Watch `path` for the next write under `key`; False when it cannot be watched."""
        if self._fd < 0:
            return False
        wd = self._add(self._fd, os.fsencode(path), WRITTEN | IN_ONESHOT)
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                log.debug("inotify watch limit reached: %s stays polled", path)
            return False
        old = self._wd_of.get(key)
        if old is not None and old != wd:
            self._by_wd.pop(old, None)
        self._by_wd[wd] = key
        self._wd_of[key] = wd
        return True

    def disarm(self, key: str) -> None:
        wd = self._wd_of.pop(key, None)
        if wd is None:
            return
        self._by_wd.pop(wd, None)
        if self._fd >= 0:
            self._rm(self._fd, wd)  # gone already when it fired: EINVAL, ignored

    def fired(self) -> set[str]:
        """Keys whose directory was written since the last call (their watches are gone).

        After an overflow of the kernel's queue any of them may have been written:
        every armed key is returned."""
        out: set[str] = set()
        if self._fd < 0:
            return out
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("inotify read failed: %s", exc)
                break
            pos = 0
            while pos + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size + length
                if mask & IN_Q_OVERFLOW:
                    out |= set(self._wd_of)
                    continue
                key = self._by_wd.get(wd)
                if key is None:
                    continue
                if mask & (WRITTEN | IN_IGNORED):
                    # One-shot: the kernel dropped the watch (IN_IGNORED also when the
                    # directory was removed). Either way, look at it again.
                    out.add(key)
                    self._by_wd.pop(wd, None)
                    if self._wd_of.get(key) == wd:
                        del self._wd_of[key]
        return out

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        self._by_wd.clear()
        self._wd_of.clear()
