"""What deploy/prometheus ships: promtool accepts it, and it names only metrics we serve."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
SRC = ROOT / "src" / "openha"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus)")
_NAME = re.compile(r"\b(?:openha|haproxy)_[a-z0-9_]+\b")
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    result = _promtool("check", "rules", "openha.rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_alerts_fire_in_promtool_rule_tests() -> None:
    result = _promtool("test", "rules", "openha.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_scrape_config_syntax() -> None:
    # The credentials file is the operator's to create: syntax only.
    result = _promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) > 20
    return exprs


def _served_names() -> str:
    return "\n".join(path.read_text() for path in SRC.rglob("*.py"))


@pytest.mark.parametrize("source", ["openha.rules.yml", "grafana-dashboard.json"])
def test_every_metric_named_is_served(source: str) -> None:
    """A typo in a rule or a panel would never fire or draw: each name is in the code
    (as a whole family name, or as HAProxy's `haproxy_<level>_` prefix and a field)."""
    text = (DEPLOY / source).read_text()
    code = _served_names()
    missing = []
    for name in sorted(set(_NAME.findall(text))):
        base = next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)
        level = re.match(r"haproxy_(frontend|backend|server|process)_(.+)", base)
        if level:
            found = f'"{level.group(2)}"' in code
        else:
            found = f'"{base}"' in code or f'"{name}"' in code
        if not found:
            missing.append(name)
    assert missing == []


def test_dashboard_variables_and_datasource() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "project", "loadbalancer"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    assert any("$loadbalancer" in expr for expr in _dashboard_exprs())
