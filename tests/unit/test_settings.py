"""Settings: defaults, a TOML file, and OPENHA_* variables over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from openha.settings import Settings


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
