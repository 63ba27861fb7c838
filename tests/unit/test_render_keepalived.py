"""keepalived configs: valid for `keepalived -t`, and nothing outside a strict grammar gets in."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from openha.agent.keepalived import checkable
from openha.render.haproxy import RenderError
from openha.render.keepalived import (
    SCRIPT_USER,
    VrrpSpec,
    render_keepalived,
    render_notify_script,
)

LB = "5b6c7d8e-1111-2222-3333-444455556666"
INSTANCE = "9a8b7c6d-1111-2222-3333-444455556666"


def spec(tmp_path: Path, **kw: object) -> VrrpSpec:
    script = tmp_path / "vrrp_notify.sh"
    script.write_text(render_notify_script(str(tmp_path / "vrrp_state")))
    script.chmod(0o755)  # as the agent writes it: its script user runs it
    base = VrrpSpec(
        lb_id=LB,
        instance_id=INSTANCE,
        vrid=42,
        priority=100,
        interface="eth0",
        local_address="10.0.0.5",
        peer_addresses=("10.0.0.6",),
        vip="10.0.0.100",
        vip_prefixlen=24,
        track_file=str(tmp_path / "haproxy.down"),
        notify_script=str(script),
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("keepalived") is None, reason="keepalived is not installed")
@pytest.mark.parametrize("version", [2, 3])
def test_config_passes_keepalived_check(tmp_path: Path, version: int) -> None:
    advert = 1.0 if version == 2 else 0.25
    cfg = render_keepalived(
        spec(tmp_path, vrrp_version=version, advert_int=advert, auth_pass="s3cret")
    )
    # Scripts run unprivileged; `keepalived -t` is given root there (see `checkable`).
    assert f"script_user {SCRIPT_USER}\n" in cfg
    checked = checkable(cfg)
    assert checked.replace("script_user root\n", f"script_user {SCRIPT_USER}\n") == cfg
    path = tmp_path / "keepalived.conf"
    path.write_text(checkable(cfg))
    proc = subprocess.run(["keepalived", "-t", "-f", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "nopreempt" in cfg and "virtual_router_id 42" in cfg
    assert "unicast_peer {\n        10.0.0.6\n    }" in cfg
    assert ("auth_pass s3cret" in cfg) == (version == 2)  # VRRPv3 has no authentication
    assert f"advert_int {advert:g}" in cfg


@pytest.mark.parametrize(
    "change",
    [
        {"vrid": 0},
        {"vrid": 256},
        {"priority": 255},
        {"interface": "eth0\nvrrp_script x"},
        {"interface": "a-very-long-interface-name"},
        {"local_address": "10.0.0.5 dev x"},
        {"peer_addresses": ("10.0.0.6\n}",)},
        {"vip": "10.0.0.100/24"},
        {"vip_prefixlen": 33},
        {"notify_script": "/tmp/x; rm -rf /"},
        {"notify_script": "relative.sh"},
        {"track_file": '/tmp/x"\nvrrp_script y'},
        {"track_file": "relative"},
        {"vrrp_version": 2, "advert_int": 0.25},
        {"vrrp_version": 4},
        {"vrrp_version": 2, "advert_int": 1.0, "auth_pass": "has space"},
        {"lb_id": "x\ny"},
    ],
)
def test_hostile_or_impossible_values_are_refused(
    tmp_path: Path, change: dict[str, object]
) -> None:
    with pytest.raises(RenderError):
        render_keepalived(spec(tmp_path, **change))


def test_notify_script_writes_this_instances_state_file(tmp_path: Path) -> None:
    state = tmp_path / "vrrp_state"
    script = tmp_path / "notify.sh"
    script.write_text(render_notify_script(str(state)))
    script.chmod(0o755)  # as the agent writes it: its script user runs it
    for args, expected in ((["INSTANCE", "lb", "MASTER", "100"], "MASTER\n"),
                           (["INSTANCE", "lb", "STOP", "100"], "MASTER\n"),
                           (["INSTANCE", "lb", "FAULT", "0"], "FAULT\n")):  # fmt: skip
        subprocess.run([str(script), *args], check=True)
        assert state.read_text() == expected
    with pytest.raises(RenderError):
        render_notify_script("/run/x/vrrp_state'; reboot")


def test_config_tracks_a_file_and_runs_no_check_script(tmp_path: Path) -> None:
    cfg = render_keepalived(spec(tmp_path))
    assert f'file "{tmp_path / "haproxy.down"}"' in cfg
    assert "vrrp_script" not in cfg and "track_script" not in cfg
