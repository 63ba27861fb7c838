"""Settings: defaults, a TOML file, and OPENHA_* variables over both."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from openha.settings import HOST_AGENT_DIRS, Settings, default_agent_dir


def test_toml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "openha.toml"
    config.write_text(
        f'api_bind = "0.0.0.0:9000"\nhost_down_after = 7.5\nstate_dir = "{tmp_path}"\n'
    )
    monkeypatch.setenv("OPENHA_CONFIG", str(config))
    settings = Settings()
    assert settings.api_host_port == ("0.0.0.0", 9000)
    assert settings.host_down_after == 7.5
    assert settings.database_url == f"sqlite:///{tmp_path / 'openha.db'}"
    monkeypatch.setenv("OPENHA_HOST_DOWN_AFTER", "3")
    assert Settings().host_down_after == 3.0


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENHA_AUTH", "kerberos")
    with pytest.raises(ValueError):
        Settings()


def test_a_root_agent_keeps_its_state_where_its_script_user_can_enter() -> None:
    """keepalived's script user must reach pairs' notify scripts under the agent dir:
    below a 0700 directory (`make run` in root's home) root's agent keeps it elsewhere."""
    open_dir = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp: others may pass
    try:
        open_dir.chmod(0o711)
        assert default_agent_dir(open_dir / "var") == open_dir / "var" / "agent"
        closed = open_dir / "home"
        closed.mkdir(mode=0o700)
        moved = default_agent_dir(closed / "var")
        if os.geteuid() == 0:
            assert moved.parent == HOST_AGENT_DIRS and moved != default_agent_dir(open_dir / "x")
            assert Settings(state_dir=closed / "var").agent_dir == moved
        else:
            assert moved == closed / "var" / "agent"  # a non-root agent runs no keepalived
        assert Settings(state_dir=closed, agent_dir=closed / "a").agent_dir == closed / "a"
    finally:
        shutil.rmtree(open_dir)
