"""The stock `openstack loadbalancer ...` CLI against a live OpenHA, resolving names everywhere.

One scenario, in the order an operator types it: every `--wait` must come back
(the CLI polls provisioning_status with no time limit, so a stuck PENDING_*
would hang: each command has a timeout), and names (subnet, LB, listener,
pool) are resolved by the CLI through our exact-match list filters.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from tests.e2e.conftest import SUBNET_CIDR, SUBNET_NAME, OpenHA

pytestmark = pytest.mark.e2e


def test_openstack_cli_full_tree(openha: OpenHA) -> None:
    os_ = openha.openstack

    lb = os_("loadbalancer", "create", "--name", "lb1", "--vip-subnet-id", SUBNET_NAME, "--wait")
    assert lb["name"] == "lb1"
    assert lb["vip_subnet_id"] == openha.subnet_id
    assert ipaddress.ip_address(lb["vip_address"]) in ipaddress.ip_network(SUBNET_CIDR)

    listener = os_(
        "loadbalancer", "listener", "create", "--name", "l1", "--protocol", "HTTP",
        "--protocol-port", "80", "lb1", "--wait",
    )  # fmt: skip
    assert (listener["protocol"], listener["protocol_port"]) == ("HTTP", 80)

    pool = os_(
        "loadbalancer", "pool", "create", "--name", "p1", "--lb-algorithm", "ROUND_ROBIN",
        "--listener", "l1", "--protocol", "HTTP", "--wait",
    )  # fmt: skip
    assert pool["lb_algorithm"] == "ROUND_ROBIN"

    member = os_(
        "loadbalancer", "member", "create", "--address", "192.0.2.10", "--protocol-port",
        "8080", "p1", "--wait",
    )  # fmt: skip
    assert (member["address"], member["protocol_port"]) == ("192.0.2.10", 8080)

    hm = os_(
        "loadbalancer", "healthmonitor", "create", "--delay", "5", "--timeout", "3",
        "--max-retries", "3", "--type", "HTTP", "p1", "--wait",
    )  # fmt: skip
    assert (hm["type"], hm["delay"], hm["timeout"], hm["max_retries"]) == ("HTTP", 5, 3, 3)

    policy = os_("loadbalancer", "l7policy", "create", "--action", "REJECT", "l1", "--wait")
    assert policy["action"] == "REJECT"

    rule = os_(
        "loadbalancer", "l7rule", "create", "--compare-type", "STARTS_WITH", "--type", "PATH",
        "--value", "/admin", policy["id"], "--wait",
    )  # fmt: skip
    assert (rule["type"], rule["compare_type"], rule["value"]) == ("PATH", "STARTS_WITH", "/admin")

    shown = os_("loadbalancer", "show", "lb1")
    assert shown["id"] == lb["id"]
    assert shown["provisioning_status"] == "ACTIVE"
    assert [x["id"] for x in shown["listeners"]] == [listener["id"]]
    assert [x["id"] for x in shown["pools"]] == [pool["id"]]

    listed = os_("loadbalancer", "list", "--name", "lb1")
    assert [row["id"] for row in listed] == [lb["id"]]

    # `status show` prints its own JSON (it has no -f option).
    status = json.loads(os_("loadbalancer", "status", "show", "lb1", expect_json=False))
    tree = status["loadbalancer"]
    assert tree["id"] == lb["id"]
    assert tree["provisioning_status"] == "ACTIVE"
    [status_listener] = tree["listeners"]
    assert status_listener["id"] == listener["id"]
    [status_pool] = status_listener["pools"]
    assert status_pool["id"] == pool["id"]
    assert [m["id"] for m in status_pool["members"]] == [member["id"]]
    assert status_pool["health_monitor"]["id"] == hm["id"]

    stats = os_("loadbalancer", "stats", "show", "lb1")
    assert set(stats) >= {
        "bytes_in",
        "bytes_out",
        "active_connections",
        "total_connections",
        "request_errors",
    }

    os_("loadbalancer", "delete", "--cascade", "--wait", "lb1", expect_json=False)
    assert os_("loadbalancer", "list", "--name", "lb1") == []
    # The VIP's port went with it: the subnet could now be deleted.
    resp = openha.admin_request("GET", f"/v2.0/ports?device_id={lb['id']}")
    assert resp.json()["ports"] == []
