"""Status words have one definition: `openha.domain.constants`, read by every layer.

Every module under src/openha is parsed with `ast` (nothing is imported) and every
string literal that is not a docstring is held against the status words of the
domain (provisioning, operating, host and instance statuses). A literal such as
`"PENDING_DELETE"` written in a module would drift from the constant the day one of
them changes; the few modules that own a vocabulary of their own, which happens to
share words with ours, are named below with what they own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import openha
from openha.domain import constants as c

SRC = Path(openha.__file__).parent
STATUS_WORDS = frozenset(
    {c.ACTIVE, c.DELETED, c.ERROR, *c.PENDING_STATUSES, *c.OPERATING_STATUSES}
    | {*c.HOST_STATUSES, *c.HOST_ADMIN_STATES, *c.INSTANCE_STATUSES}
)
# Modules that define words of another vocabulary (path under src/openha -> what it is).
OWNERS = {
    "domain/constants.py": "the domain's own words",
    "agent/protocol.py": "the states an agent reports for its instances (the wire protocol)",
    "domain/status.py": "HAProxy's server states (UP, DOWN, ...) read from its stats",
    "api/manage/amphorae.py": "Octavia's amphora status ALLOCATED",
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def bare_status_words(text: str) -> list[tuple[int, str]]:
    """(line, word) of every status word written as a string literal, docstrings aside."""
    tree = ast.parse(text)
    docs = _docstrings(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in STATUS_WORDS
        and id(node) not in docs
    ]


def test_status_words_are_read_from_the_constants() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        if relative in OWNERS or relative.startswith("models/migrations/"):
            continue  # migrations are history: they keep the words they were written with
        found += [
            f"{relative}:{line} {word!r}" for line, word in bare_status_words(path.read_text())
        ]
    assert found == [], "use openha.domain.constants instead"


def test_owners_exist() -> None:
    assert [p for p in OWNERS if not (SRC / p).is_file()] == []


def test_the_check_catches_a_bare_word() -> None:
    text = (
        '"""A module saying ACTIVE in its docstring is fine."""\n'
        "def f(lb):\n"
        '    """So is PENDING_DELETE here."""\n'
        '    return lb.provisioning_status != "PENDING_DELETE" or lb.host == "UP"\n'
    )
    assert bare_status_words(text) == [(4, "PENDING_DELETE"), (4, "UP")]
