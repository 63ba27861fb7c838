"""Unified diffs of rendered configuration files: what an operator reads before acting."""

from __future__ import annotations

import difflib
from collections.abc import Mapping


def unified(before: Mapping[str, str | None], after: Mapping[str, str | None]) -> str:
    """One unified diff over every file of `before` and `after` (file name -> text; a
    missing or None file is empty); "" when nothing differs."""
    out: list[str] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name) or "", after.get(name) or ""
        if old == new:
            continue
        out.extend(
            difflib.unified_diff(
                old.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile=f"a/{name}" if name in before else "/dev/null",
                tofile=f"b/{name}" if name in after else "/dev/null",
            )
        )
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
    return "".join(out)
