"""Secrets out of what diagnostics show: configurations, captured requests, diffs.

A rendered HAProxy or keepalived config may hold credentials (`stats auth`, userlist
passwords, keepalived's `auth_pass`) and tenant secrets (an L7 rule matching an API
key header or a session cookie); a protocol error captured by `show errors` may hold
a client's Authorization header. Diagnostics show everything else as it is, so an
operator reads the real configuration, with `<redacted>` where a secret was.
"""

from __future__ import annotations

import difflib
import re

REDACTED = "<redacted>"

# Header (and cookie) names whose values are credentials.
_SENSITIVE_NAME = r"[^()]*(?:authorization|cookie|token|secret|passw|api[-_]?key|session)[^()]*"
_SECRET_LINES = (
    # stats auth <user>:<password>
    re.compile(r"^(\s*stats\s+auth\s+[^:\s]+:)\S+"),
    # userlist: user <name> password <hash> | insecure-password <password>
    re.compile(r"^(\s*user\s+\S+\s+(?:insecure-)?password\s+)\S+"),
    # keepalived: auth_pass <password>
    re.compile(r"^(\s*auth_pass\s+)\S+"),
    # http-request set-header Authorization <value>
    re.compile(
        rf"^(\s*http-(?:request|response)\s+(?:set|add)-header\s+'?{_SENSITIVE_NAME}'?\s+).+",
        re.IGNORECASE,
    ),
)
# An ACL over a sensitive header, or any cookie: its quoted value goes, the rest stays.
_SENSITIVE_ACL = re.compile(
    rf"^\s*acl\s+\S+\s+(?:req\.)?(?:cook\w*\(|hdr\w*\('?\"?{_SENSITIVE_NAME}\))",
    re.IGNORECASE,
)
# The last word of a line, in HAProxy's quoting: quoted runs joined by escapes.
_LAST_WORD = re.compile(r"(?:'[^']*'|\\x[0-9a-fA-F]{2}|\\.)+\s*$")
_HEADER_LINE = re.compile(
    r"^(\s*(?:proxy-)?(?:authorization|cookie|set-cookie|x-auth-token|x-api-key)\s*:\s*)"
    r"(.*?)((?:\\r)?(?:\\n)?)$",
    re.IGNORECASE,
)


def redact_line(line: str) -> str:
    for pattern in _SECRET_LINES:
        if pattern.match(line):
            return pattern.sub(lambda m: m.group(1) + REDACTED, line, count=1)
    if _SENSITIVE_ACL.match(line):
        return _LAST_WORD.sub(f"'{REDACTED}'", line, count=1)
    return line


def redact_config(config: str) -> str:
    """`config` with every secret replaced by `<redacted>`, line for line."""
    return "\n".join(redact_line(line) for line in config.split("\n"))


def redact_header_line(line: str) -> str:
    """A captured request line (as `show errors` escapes it) without a credential's value."""
    m = _HEADER_LINE.match(line)
    return f"{m.group(1)}{REDACTED}{m.group(3)}" if m else line


def config_diff(last_good: str | None, current: str | None, *, context: int = 3) -> str:
    """A unified diff from the last good config to `current`, both redacted ('' if equal)."""
    old = redact_config(last_good or "").splitlines(keepends=True)
    new = redact_config(current or "").splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(old, new, "haproxy.cfg (last good)", "haproxy.cfg", n=context)
    )
