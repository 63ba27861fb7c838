"""Events land with their transaction, and their log line only once it committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from openha import events
from openha.db import make_engine, make_session_factory, transaction, upgrade
from openha.models import Event


def test_the_log_line_waits_for_the_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    caplog.set_level("INFO", logger="openha.events")

    with pytest.raises(RuntimeError), transaction(sessions) as s:
        events.emit(s, "test.rolled_back", "never happened", severity="ERROR")
        s.flush()
        raise RuntimeError("the change fails")
    assert caplog.records == []

    with transaction(sessions) as s:
        events.emit(s, "test.committed", "happened", severity="WARNING")
        s.flush()
        assert caplog.records == [], "logged before its transaction committed"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "test.committed: happened")
    ]

    # A session used again after a rollback does not log what was rolled back.
    caplog.clear()
    session = sessions()
    events.emit(session, "test.discarded", "rolled back before any flush")
    session.rollback()
    events.emit(session, "test.kept", "committed")
    session.commit()
    session.close()
    assert [r.getMessage() for r in caplog.records] == ["test.kept: committed"]
    with transaction(sessions) as s:
        kinds = set(s.scalars(select(Event.kind)))
    assert kinds == {"test.committed", "test.kept"}
