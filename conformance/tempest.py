"""`make conformance`: octavia-tempest-plugin's API tests against OpenHA behind Keystone.

A real Keystone (`conformance.keystone`), OpenHA in Keystone mode with the noop
provider (`openha up --no-agent`), registered as the `load-balancer` service, as
the `network` service (its Neutron-like networks: the plugin's live network mode
looks the network of `test_network_override` up there) and as the `key-manager`
service (its certificate store: the TERMINATED_HTTPS tests store their PKCS#12
bundles, CAs and CRLs there with python-barbicanclient), a shared network and
subnet for VIPs, then `tempest run` with RBAC type `keystone_default_roles`.
Prints the pass, fail and skip counts (and the failed tests); everything runs in
a temporary directory that `--keep` leaves for a look.

Not run: the plugin's scenario suites (`tests.scenario`, `act_stdby_scenario`,
`spare_pool_scenario`, `barbican_scenario`) boot Nova servers as members and send
traffic through amphorae over Neutron ports and floating IPs; here there is no
Nova and no Neutron (OpenHA's own integration tests send real traffic). Skipped
by the plugin itself, as configured here: the amphora tests (the amphora provider
only), availability zones (`[load_balancer] availability_zone` unset: the plugin's
zone profiles carry the amphora driver's `management_network`, which no OpenHA
provider takes), IPv6 (`test_with_ipv6 = false`:
the shared network has one IPv4 subnet).

    python -m conformance.tempest [--regex octavia_tempest_plugin.tests.api.v2] [--keep]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx

from conformance import servers
from conformance.keystone import VENV, Keystone
from openha.keystone_register import Keystone as KeystoneClient
from openha.keystone_register import Registration, register

SERVICE_PASSWORD = "openha-service-secret"


def register_openha(ks: Keystone, endpoint: str, *, key_manager: bool = False) -> KeystoneClient:
    """OpenHA in `ks`'s catalogue as Octavia would be (`load-balancer`, and `network` since
    no Neutron runs here; `key-manager` too when asked); an admin client of `ks`."""
    register(
        Registration(
            auth_url=ks.url,
            admin_username="admin",
            admin_password=ks.admin_password,
            endpoint=endpoint,
            service_password=SERVICE_PASSWORD,
            network=True,
            key_manager=key_manager,
        )
    )
    return KeystoneClient(ks.url, "admin", ks.admin_password, "admin", "Default")


def keystone_auth(ks: Keystone, cache_time: int = 300) -> dict[str, str]:
    """OpenHA's settings for Keystone mode against `ks`."""
    return {
        "OPENHA_AUTH": "keystone",
        "OPENHA_KEYSTONE_AUTH_URL": ks.url,
        "OPENHA_KEYSTONE_USERNAME": "openha",
        "OPENHA_KEYSTONE_PASSWORD": SERVICE_PASSWORD,
        "OPENHA_KEYSTONE_TOKEN_CACHE_TIME": str(cache_time),
        # The noop provider reports its objects up, as Octavia's noop drivers leave them.
        "OPENHA_OBSERVE_INTERVAL": "0.25",
    }


def vip_network(base: str, token: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    """A shared network and subnet for every project's VIPs and members (`headers`:
    an admin's, in place of a token)."""
    headers = headers or {"X-Auth-Token": token}
    net = httpx.post(
        f"{base}/v2.0/networks",
        json={
            "network": {
                "name": "tempest-public",
                "shared": True,
                "provider:network_type": "flat",
                "provider:physical_network": "ohtempest",
            }
        },
        headers=headers,
        timeout=30,
    )
    if net.status_code != 201:
        raise RuntimeError(f"network: {net.status_code} {net.text}")
    network_id = net.json()["network"]["id"]
    sub = httpx.post(
        f"{base}/v2.0/subnets",
        json={
            "subnet": {
                "name": "tempest-public",
                "network_id": network_id,
                "cidr": "10.250.0.0/16",
                "ip_version": 4,
            }
        },
        headers=headers,
        timeout=30,
    )
    if sub.status_code != 201:
        raise RuntimeError(f"subnet: {sub.status_code} {sub.text}")
    return network_id, sub.json()["subnet"]["id"]


def _dict_opt(base: str, token: str, path: str, key: str) -> str:
    """What OpenHA answers at `path`, as tempest's DictOpt reads it (name:description,...)."""
    resp = httpx.get(f"{base}/v2/lbaas/{path}", headers={"X-Auth-Token": token}, timeout=30)
    resp.raise_for_status()
    return ",".join(f"{p['name']}:{p['description']}" for p in resp.json()[key])


def discovered(base: str, token: str) -> dict[str, str]:
    """Providers and the noop provider's capabilities, for the plugin to expect."""
    return {
        "enabled_provider_drivers": _dict_opt(base, token, "providers", "providers"),
        "expected_flavor_capability": _dict_opt(
            base, token, "providers/noop/flavor_capabilities", "flavor_capabilities"
        ),
        "expected_availability_zone_capability": _dict_opt(
            base,
            token,
            "providers/noop/availability_zone_capabilities",
            "availability_zone_capabilities",
        ),
    }


def tempest_conf(ks: Keystone, network_id: str, found: dict[str, str]) -> str:
    options = "\n".join(f"{key} = {value}" for key, value in found.items())
    return textwrap.dedent(
        f"""
        [DEFAULT]
        log_file = tempest.log
        [auth]
        admin_username = admin
        admin_password = {ks.admin_password}
        admin_project_name = admin
        admin_domain_name = Default
        use_dynamic_credentials = true
        create_isolated_networks = false
        [identity]
        uri_v3 = {ks.url}
        auth_version = v3
        region = RegionOne
        disable_ssl_certificate_validation = true
        [identity-feature-enabled]
        api_v2 = false
        [service_available]
        load_balancer = true
        neutron = true
        nova = true
        glance = true
        cinder = false
        swift = false
        barbican = true
        [network]
        project_networks_reachable = true
        [load_balancer]
        RBAC_test_type = keystone_default_roles
        log_user_roles = false
        provider = noop
        {{options}}
        test_network_override = {network_id}
        test_with_noop = false
        test_with_ipv6 = false
        build_interval = 0.5
        build_timeout = 120
        check_interval = 0.5
        check_timeout = 60
        lb_build_interval = 0.5
        lb_build_timeout = 120
        """
    ).replace("{options}", options)


SUMMARY = re.compile(r"^ - (Passed|Failed|Skipped): (\d+)", re.M)
# One line per test as tempest streams them: "{0} <test id> [1.2s] ... ok".
RESULT = re.compile(r"^\{\d+\} (\S+).*? \.\.\. (ok|FAILED|SKIPPED)", re.M)


def run_tempest(
    workdir: Path, regex: str, concurrency: int, deadline: float | None
) -> tuple[dict[str, int], str, bool]:
    """Counts (passed, failed, skipped), the output, and whether the run finished before
    `deadline` seconds (if not, the counts are those of the tests done by then)."""
    tempest = str(VENV / "bin" / "tempest")
    home = workdir / "tempest"
    # Its own workspace registry: tempest's default (~/.tempest) refuses a name it holds
    # already, and pytest's directory names repeat from one run to the next.
    registry = workdir / "workspace.yaml"
    init = [tempest, "init", "--workspace-path", str(registry), "--name", workdir.name, str(home)]
    subprocess.run(init, check=True, capture_output=True)
    (home / "etc" / "tempest.conf").write_text((workdir / "tempest.conf").read_text())
    log = workdir / "tempest-run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [tempest, "run", "--regex", regex, "--concurrency", str(concurrency)],
            cwd=home, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=deadline)
            finished = True
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            finished = False
    text = log.read_text(errors="replace")
    counts = {k.lower(): int(v) for k, v in SUMMARY.findall(text)}
    if not counts:
        words = {"ok": "passed", "FAILED": "failed", "SKIPPED": "skipped"}
        for _, result in RESULT.findall(text):
            counts[words[result]] = counts.get(words[result], 0) + 1
    return counts, text, finished


def run(
    workdir: Path, regex: str, concurrency: int = 2, deadline: float | None = None
) -> tuple[dict[str, int], str, bool]:
    """Keystone, OpenHA registered in it, then tempest (`run_tempest`), in `workdir`."""
    openha: servers.Server | None = None
    try:
        with Keystone.started(workdir / "keystone") as ks:
            openha = servers.start_openha(workdir, keystone_auth(ks))
            servers.wait_ready(openha)
            # The plugin's TERMINATED_HTTPS tests store their certificates with
            # python-barbicanclient, which finds the store in the catalogue.
            admin = register_openha(ks, openha.base, key_manager=True)
            network_id, _ = vip_network(openha.base, admin.token)
            found = discovered(openha.base, admin.token)
            admin.close()
            (workdir / "tempest.conf").write_text(tempest_conf(ks, network_id, found))
            return run_tempest(workdir, regex, concurrency, deadline)
    finally:
        if openha is not None:
            openha.stop()


def failed_tests(out: str) -> list[str]:
    return sorted({name for name, result in RESULT.findall(out) if result == "FAILED"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regex", default="octavia_tempest_plugin.tests.api.v2")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--deadline", type=float, default=None, help="stop tempest after this many seconds"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="openha-tempest-"))
    try:
        counts, out, finished = run(workdir, args.regex, args.concurrency, args.deadline)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for name in failed_tests(out):
        print(f"FAILED {name}")
    partial = "" if finished else f" (stopped after {args.deadline:.0f} s: tests done by then)"
    print(
        f"tempest {args.regex}: {counts.get('passed', 0)} passed, "
        f"{counts.get('failed', 0)} failed, {counts.get('skipped', 0)} skipped{partial}"
    )
    if args.keep:
        print(f"kept {workdir}")
    sys.exit(1 if counts.get("failed", 0) or not counts else 0)


if __name__ == "__main__":
    main()
