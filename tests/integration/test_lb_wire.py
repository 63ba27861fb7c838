"""Every load-balancing feature observed on the wire, through API → controller → agent → HAProxy.

Nothing here reads a rendered config: each test declares objects through the
Octavia API and then looks at what clients in lab namespaces get back (status
codes, Location headers, which backend answered, what the backend saw). One
Stack, lab and set of backends serve the whole module; each test builds its own
load balancer and an autouse fixture deletes every LB afterwards, even on failure.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from lbhelpers import (
    answers,
    connect,
    delete_lb,
    http_on,
    refused,
    served_by,
    update,
    wait_answers,
)
from stack import Stack, wait_for

from openha.lab import BackendServer, ClientNamespace, Lab

pytestmark = pytest.mark.integration

APP_COOKIE = "APPSESSION"


@dataclass
class World:
    """What the module's tests share: one OpenHA, its lab, two clients, three web servers."""

    lab: Lab
    stack: Stack
    c1: ClientNamespace
    c2: ClientNamespace
    web: list[BackendServer]  # plain http servers web1..web3

    def backend(self, name: str, **kwargs: Any) -> BackendServer:
        """One more backend for a test that needs its own (closed with the lab)."""
        return BackendServer(self.lab, name, **kwargs)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with Lab() as lab:
        stack = Stack(lab)
        try:
            stack.add_agent()
            web = [BackendServer(lab, f"web{i}") for i in (1, 2, 3)]
            yield World(lab, stack, ClientNamespace(lab, "c1"), ClientNamespace(lab, "c2"), web)
        finally:
            stack.close()


@pytest.fixture(autouse=True)
def _delete_lbs(world: World) -> Iterator[None]:
    """Each test starts with no LB and leaves none behind, whatever happened."""
    yield
    stack = world.stack
    for lb in stack.tenant.get("/v2/lbaas/loadbalancers").json()["loadbalancers"]:
        delete_lb(stack, lb["id"])
    assert stack.agents[0].instance_dirs() == []


# --- building blocks ------------------------------------------------------------------------


def new_lb(stack: Stack) -> dict[str, Any]:
    return stack.create("loadbalancers", "loadbalancer", {"vip_subnet_id": stack.subnet_id})


def add_pool(
    stack: Stack,
    members: list[BackendServer],
    *,
    listener_id: str | None = None,
    lb_id: str | None = None,
    protocol: str = "HTTP",
    algorithm: str = "ROUND_ROBIN",
    **extra: Any,
) -> dict[str, Any]:
    """A pool (default pool of `listener_id`, or a spare pool of `lb_id`) with `members`."""
    owner = {"listener_id": listener_id} if listener_id else {"loadbalancer_id": lb_id}
    pool = stack.create(
        "pools", "pool", {**owner, "protocol": protocol, "lb_algorithm": algorithm, **extra}
    )
    pool["members"] = [
        stack.create(
            f"pools/{pool['id']}/members",
            "member",
            {"address": b.ip, "protocol_port": b.port, "name": b.name},
        )
        for b in members
    ]
    return pool


def add_listener(
    stack: Stack, lb_id: str, port: int, protocol: str = "HTTP", **extra: Any
) -> dict[str, Any]:
    body = {"loadbalancer_id": lb_id, "protocol": protocol, "protocol_port": port, **extra}
    return stack.create("listeners", "listener", body)


def add_policy(
    stack: Stack, listener_id: str, action: str, rules: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    body = {"listener_id": listener_id, "action": action, "rules": rules, **extra}
    return stack.create("l7policies", "l7policy", body)


def rule(rtype: str, compare: str, value: str, **extra: Any) -> dict[str, Any]:
    return {"type": rtype, "compare_type": compare, "value": value, **extra}


def ready(world: World, lb: dict[str, Any], *urls: str) -> None:
    """Wait for ACTIVE, then for every URL to answer (the VIP is plumbed and serving)."""
    world.stack.wait_active(lb["id"])
    for url in urls:
        wait_answers(world.c1, url)


def server(client: ClientNamespace, url: str, **kwargs: Any) -> str:
    resp = client.request(url, timeout=5, **kwargs)
    assert resp.status == 200, (url, resp.status, resp.text)
    return str(resp.json()["server"])


def who(client: ClientNamespace, url: str) -> str | None:
    """The backend answering `url` now, or None when the request fails."""
    try:
        resp = client.request(url, timeout=2)
        return str(resp.json()["server"]) if resp.status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


def status_of(client: ClientNamespace, url: str, **kwargs: Any) -> tuple[int, str | None]:
    resp = client.request(url, timeout=5, **kwargs)
    return resp.status, resp.headers.get("location")


# --- L7 --------------------------------------------------------------------------------------


def test_l7_rule_types_and_actions(world: World) -> None:
    """Each rule type and compare type routes, redirects or rejects exactly what it names."""
    stack, c1 = world.stack, world.c1
    alt = world.backend("alt")
    lb = new_lb(stack)
    li = add_listener(stack, lb["id"], 80)
    add_pool(stack, world.web[:1], listener_id=li["id"])
    spare = add_pool(stack, [alt], lb_id=lb["id"])
    to_alt = {"redirect_pool_id": spare["id"]}
    policies: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
        ("REJECT", [rule("PATH", "STARTS_WITH", "/admin")], {}),
        (
            "REDIRECT_TO_URL",
            [rule("PATH", "EQUAL_TO", "/old")],
            {"redirect_url": "http://example.com/new", "redirect_http_code": 301},
        ),
        (
            "REDIRECT_TO_URL",
            [rule("PATH", "STARTS_WITH", "/perm")],
            {"redirect_url": "https://example.com/moved", "redirect_http_code": 308},
        ),
        (
            "REDIRECT_PREFIX",
            [rule("HOST_NAME", "EQUAL_TO", "legacy.example.org")],
            {"redirect_prefix": "https://new.example.org"},
        ),
        ("REDIRECT_TO_POOL", [rule("HOST_NAME", "EQUAL_TO", "*.example.com")], to_alt),
        ("REDIRECT_TO_POOL", [rule("HOST_NAME", "STARTS_WITH", "beta.")], to_alt),
        ("REDIRECT_TO_POOL", [rule("PATH", "REGEX", "^/api/v[0-9]+/")], to_alt),
        ("REDIRECT_TO_POOL", [rule("PATH", "CONTAINS", "/beta/")], to_alt),
        ("REDIRECT_TO_POOL", [rule("PATH", "ENDS_WITH", ".json")], to_alt),
        ("REDIRECT_TO_POOL", [rule("FILE_TYPE", "EQUAL_TO", "png")], to_alt),
        ("REDIRECT_TO_POOL", [rule("HEADER", "EQUAL_TO", "yes", key="X-Canary")], to_alt),
        ("REDIRECT_TO_POOL", [rule("COOKIE", "EQUAL_TO", "beta", key="flavor")], to_alt),
        # Two rules are ANDed; `invert` negates one: /private needs the token.
        (
            "REJECT",
            [
                rule("PATH", "STARTS_WITH", "/private"),
                rule("HEADER", "EQUAL_TO", "secret", key="X-Token", invert=True),
            ],
            {},
        ),
        # Placed after the pool switches, yet REJECT and redirects still win over them.
        ("REJECT", [rule("PATH", "STARTS_WITH", "/closed/")], {}),
        (
            "REDIRECT_TO_URL",
            [rule("PATH", "EQUAL_TO", "/v1.json")],
            {"redirect_url": "http://example.com/json"},
        ),
    ]
    for action, rules, extra in policies:
        add_policy(stack, li["id"], action, rules, **extra)
    url = f"http://{lb['vip_address']}"
    ready(world, lb, url + "/")

    def where(path: str, **kwargs: Any) -> str:
        return server(c1, url + path, **kwargs)

    # Unmatched requests reach the default pool.
    for path in ("/", "/api/x/", "/img/logo.pngx", "/x.json.bak", "/betas/", "/adm"):
        assert where(path) == "web1", path
    assert where("/", headers={"Host": "example.com"}) == "web1"  # not a subdomain
    assert where("/", headers={"X-Canary": "no"}) == "web1"
    assert where("/", headers={"Cookie": "flavor=stable"}) == "web1"

    # REJECT
    assert status_of(c1, url + "/admin")[0] == 403
    assert status_of(c1, url + "/admin/users?id=1")[0] == 403
    # REDIRECT_TO_URL with its code
    assert status_of(c1, url + "/old") == (301, "http://example.com/new")
    assert status_of(c1, url + "/oldish")[0] == 200  # EQUAL_TO is exact
    assert status_of(c1, url + "/perm/a") == (308, "https://example.com/moved")
    # REDIRECT_PREFIX keeps the path and query, default code 302
    assert status_of(c1, url + "/a/b?q=1", headers={"Host": "legacy.example.org"}) == (
        302,
        "https://new.example.org/a/b?q=1",
    )
    # REDIRECT_TO_POOL, one rule type at a time
    assert where("/", headers={"Host": "shop.example.com"}) == "alt"
    assert where("/", headers={"Host": "Deep.Shop.EXAMPLE.com:80"}) == "alt"  # case, port
    assert where("/", headers={"Host": "beta.example.net"}) == "alt"
    assert where("/api/v2/items") == "alt"
    assert where("/x/beta/y") == "alt"
    assert where("/data/list.json") == "alt"
    assert where("/img/logo.png") == "alt"
    assert where("/", headers={"X-Canary": "yes"}) == "alt"
    assert where("/", headers={"Cookie": "a=1; flavor=beta"}) == "alt"
    # invert: the same path passes with the token
    assert status_of(c1, url + "/private/x")[0] == 403
    assert status_of(c1, url + "/private/x", headers={"X-Token": "wrong"})[0] == 403
    assert where("/private/x", headers={"X-Token": "secret"}) == "web1"
    # Precedence: REJECT beats an earlier pool switch, a redirect beats an earlier switch.
    assert where("/open/beta/") == "alt"
    assert status_of(c1, url + "/closed/beta/")[0] == 403
    assert where("/v2.json") == "alt"
    assert status_of(c1, url + "/v1.json") == (302, "http://example.com/json")


def test_l7_policy_position_and_admin_state(world: World) -> None:
    """Among policies of one action the lowest position wins; moving one changes the winner."""
    stack, c1 = world.stack, world.c1
    alt = world.backend("alt2")
    lb = new_lb(stack)
    li = add_listener(stack, lb["id"], 80)
    main = add_pool(stack, world.web[:1], listener_id=li["id"])
    spare = add_pool(stack, [alt], lb_id=lb["id"])
    on_order = [rule("PATH", "STARTS_WITH", "/order")]
    to_alt = add_policy(stack, li["id"], "REDIRECT_TO_POOL", on_order, redirect_pool_id=spare["id"])
    to_main = add_policy(stack, li["id"], "REDIRECT_TO_POOL", on_order, redirect_pool_id=main["id"])
    on_go = [rule("PATH", "EQUAL_TO", "/go")]
    one = add_policy(stack, li["id"], "REDIRECT_TO_URL", on_go, redirect_url="http://one.test/")
    two = add_policy(stack, li["id"], "REDIRECT_TO_URL", on_go, redirect_url="http://two.test/")
    url = f"http://{lb['vip_address']}"
    ready(world, lb, url + "/")
    positions = {p["id"]: p["position"] for p in (to_alt, to_main, one, two)}
    assert positions[to_alt["id"]] < positions[to_main["id"]]
    assert positions[one["id"]] < positions[two["id"]]
    assert served_by(c1, url + "/order", 4) == {"alt2": 4}
    assert status_of(c1, url + "/go") == (302, "http://one.test/")

    update(stack, f"l7policies/{to_main['id']}", "l7policy", {"position": 1})
    update(stack, f"l7policies/{two['id']}", "l7policy", {"position": 1})
    stack.wait_active(lb["id"])
    assert served_by(c1, url + "/order", 4) == {"web1": 4}
    assert status_of(c1, url + "/go") == (302, "http://two.test/")

    # A disabled policy is skipped: the next one matches.
    update(stack, f"l7policies/{to_main['id']}", "l7policy", {"admin_state_up": False})
    stack.wait_active(lb["id"])
    assert served_by(c1, url + "/order", 4) == {"alt2": 4}


# --- persistence -----------------------------------------------------------------------------


def _cookie(resp_headers: dict[str, str], name: str) -> str:
    """`name=value` from a Set-Cookie header (the client keeps one cookie at a time)."""
    raw = resp_headers.get("set-cookie", "")
    pair = raw.split(";", 1)[0].strip()
    assert pair.startswith(name + "="), f"no {name} cookie in {raw!r}"
    return pair


def test_session_persistence(world: World) -> None:
    """SOURCE_IP pins a client address, HTTP_COOKIE and APP_COOKIE pin a cookie, to one member."""
    stack, c1, c2 = world.stack, world.c1, world.c2
    # Applications that open their own sessions, for APP_COOKIE.
    apps = [world.backend(f"app{i}", set_cookie=APP_COOKIE) for i in (1, 2, 3)]
    lb = new_lb(stack)
    kinds = {81: {"type": "SOURCE_IP"}, 82: {"type": "HTTP_COOKIE"}}
    kinds[83] = {"type": "APP_COOKIE", "cookie_name": APP_COOKIE}
    for port, persistence in kinds.items():
        li = add_listener(stack, lb["id"], port)
        members = apps if port == 83 else world.web
        add_pool(stack, members, listener_id=li["id"], session_persistence=persistence)
    vip = lb["vip_address"]
    ready(world, lb, *(f"http://{vip}:{port}/" for port in kinds))
    names = {b.name for b in world.web}

    # SOURCE_IP: the first request of each client is balanced, then the address sticks.
    first = served_by(c1, f"http://{vip}:81/", 12)
    second = served_by(c2, f"http://{vip}:81/", 12)
    assert len(first) == 1 and len(second) == 1, (first, second)
    assert set(first) != set(second)  # round robin gave the second client the next member

    # HTTP_COOKIE: HAProxy's cookie names the member; each new session is balanced.
    sessions: dict[str, str] = {}
    for _ in range(6):
        resp = c1.request(f"http://{vip}:82/", timeout=5)
        sessions.setdefault(resp.json()["server"], _cookie(resp.headers, "SRV"))
    assert set(sessions) == names  # without the cookie: round robin
    for name, cookie in sessions.items():
        assert served_by(c1, f"http://{vip}:82/", 6, headers={"Cookie": cookie}) == {name: 6}
        # The address does not matter, the cookie does.
        assert served_by(c2, f"http://{vip}:82/", 3, headers={"Cookie": cookie}) == {name: 3}

    # APP_COOKIE: the member's own session cookie is learnt from its response.
    app: dict[str, str] = {}
    for _ in range(6):
        resp = c1.request(f"http://{vip}:83/", timeout=5)
        app.setdefault(resp.json()["server"], _cookie(resp.headers, APP_COOKIE))
    app_names = {b.name for b in apps}
    assert set(app) == app_names
    for name, cookie in app.items():
        assert served_by(c2, f"http://{vip}:83/", 6, headers={"Cookie": cookie}) == {name: 6}
    # A session the table never saw is balanced like any new client.
    unknown = served_by(c1, f"http://{vip}:83/", 6, headers={"Cookie": f"{APP_COOKIE}=nobody"})
    assert set(unknown) == app_names


# --- PROXY protocol, headers, CIDRs -----------------------------------------------------------


def test_proxy_protocol_pools(world: World) -> None:
    """PROXY and PROXYV2 pools hand the member the client's real address."""
    stack = world.stack
    pp = world.backend("pp", proxy_protocol=True)
    lb = new_lb(stack)
    for port, protocol in ((80, "PROXY"), (81, "PROXYV2")):
        li = add_listener(stack, lb["id"], port)
        add_pool(stack, [pp], listener_id=li["id"], protocol=protocol)
    vip = lb["vip_address"]
    ready(world, lb, f"http://{vip}:80/", f"http://{vip}:81/")
    for client in (world.c1, world.c2):
        for port, version in ((80, 1), (81, 2)):
            seen = client.request(f"http://{vip}:{port}/", timeout=5).json()
            assert seen["proxy"] is not None, f"no PROXY header on port {port}"
            assert (seen["proxy"]["version"], seen["proxy"]["src"]) == (version, client.ip)
            assert seen["proxy"]["dst"] == vip and seen["proxy"]["dst_port"] == port
            # The TCP peer is HAProxy, not the client: only PROXY carries the address.
            assert not seen["client"].startswith(client.ip + ":")


def test_insert_headers(world: World) -> None:
    """X-Forwarded-For/Port/Proto reach the member when asked for, and only then."""
    stack, c1 = world.stack, world.c1
    lb = new_lb(stack)
    wanted = {"X-Forwarded-For": "true", "X-Forwarded-Port": "true", "X-Forwarded-Proto": "true"}
    li = add_listener(stack, lb["id"], 8080, insert_headers=wanted)
    add_pool(stack, world.web[:1], listener_id=li["id"])
    plain = add_listener(stack, lb["id"], 80)
    add_pool(stack, world.web[:1], listener_id=plain["id"])
    vip = lb["vip_address"]
    ready(world, lb, f"http://{vip}:8080/", f"http://{vip}/")

    def headers(port: int) -> dict[str, str]:
        seen = c1.request(f"http://{vip}:{port}/", timeout=5).json()["headers"]
        return {k.lower(): v for k, v in seen.items()}

    got = headers(8080)
    assert got.get("x-forwarded-for") == c1.ip
    assert got.get("x-forwarded-port") == "8080"
    assert got.get("x-forwarded-proto") == "http"
    assert not {"x-forwarded-for", "x-forwarded-port", "x-forwarded-proto"} & set(headers(80))

    # Turning one off takes it off the wire.
    update(
        stack, f"listeners/{li['id']}", "listener", {"insert_headers": {"X-Forwarded-For": "true"}}
    )
    stack.wait_active(lb["id"])
    got = headers(8080)
    assert got.get("x-forwarded-for") == c1.ip and "x-forwarded-port" not in got


def test_allowed_cidrs(world: World) -> None:
    """Only clients inside allowed_cidrs get a connection; updates take effect at once."""
    stack, c1, c2 = world.stack, world.c1, world.c2
    lb = new_lb(stack)
    li = add_listener(stack, lb["id"], 80, allowed_cidrs=[f"{c1.ip}/32"])
    add_pool(stack, world.web[:1], listener_id=li["id"])
    url = f"http://{lb['vip_address']}/"
    ready(world, lb, url)
    assert refused(c2, url)
    assert answers(c1, url)

    def allow(cidrs: list[str] | None) -> None:
        update(stack, f"listeners/{li['id']}", "listener", {"allowed_cidrs": cidrs})
        stack.wait_active(lb["id"])

    allow([f"{c2.ip}/32", "192.0.2.0/24"])
    assert refused(c1, url) and answers(c2, url)
    allow([str(world.lab.network)])
    assert answers(c1, url) and answers(c2, url)
    allow(["192.0.2.0/24"])
    assert refused(c1, url) and refused(c2, url)
    allow(None)  # no list: everyone
    assert answers(c1, url) and answers(c2, url)


# --- TCP --------------------------------------------------------------------------------------


def test_tcp_listeners_and_algorithms(world: World) -> None:
    """TCP listeners proxy bytes; LEAST_CONNECTIONS avoids busy members; SOURCE_IP hashes."""
    stack, c1, c2 = world.stack, world.c1, world.c2
    tcp = [world.backend(f"tcp{i}", kind="tcp", port=7000) for i in (1, 2, 3)]
    echo = world.backend("echo", kind="echo", port=7001)
    lb = new_lb(stack)
    leastconn = add_listener(stack, lb["id"], 8000, "TCP")
    add_pool(
        stack, world.web, listener_id=leastconn["id"], protocol="TCP", algorithm="LEAST_CONNECTIONS"
    )
    source = add_listener(stack, lb["id"], 8001, "TCP")
    add_pool(stack, tcp, listener_id=source["id"], protocol="TCP", algorithm="SOURCE_IP")
    echoing = add_listener(stack, lb["id"], 8002, "TCP")
    add_pool(stack, [echo], listener_id=echoing["id"], protocol="TCP")
    vip = lb["vip_address"]
    ready(world, lb, f"http://{vip}:8000/")

    # Echo: bytes go through both ways untouched.
    payload = bytes(range(256)) * 64
    assert c1.tcp(vip, 8002, payload) == payload

    # SOURCE_IP: one client address always lands on the same member.
    def tcp_server(client: ClientNamespace) -> str:
        # Read without half-closing first: HAProxy aborts a server connection still being
        # set up when the client has already sent its FIN with no data (log state "CC").
        with connect(client, vip, 8001) as sock:
            return str(json.loads(sock.makefile("rb").readline())["server"])

    for client in (c1, c2):
        seen = Counter(tcp_server(client) for _ in range(9))
        assert len(seen) == 1, seen

    # LEAST_CONNECTIONS: a member holding a connection gets no new ones while others are idle.
    def short_requests(n: int) -> Counter[str]:
        seen: Counter[str] = Counter()
        for _ in range(n):
            # The member closes first, and the pause lets HAProxy count the connection
            # as gone before the next choice.
            seen[server(c1, f"http://{vip}:8000/", headers={"Connection": "close"})] += 1
            time.sleep(0.1)
        return seen

    held = [connect(c1, vip, 8000)]
    try:
        busy = http_on(held[0])["server"]
        seen = short_requests(6)
        assert busy not in seen and sum(seen.values()) == 6, (busy, seen)
        held.append(connect(c1, vip, 8000))
        busy2 = http_on(held[1])["server"]
        assert busy2 != busy
        (idle,) = {b.name for b in world.web} - {busy, busy2}
        assert short_requests(4) == {idle: 4}
    finally:
        for sock in held:
            sock.close()


# --- admin state, weights, backups, limits ---------------------------------------------------


def test_member_and_listener_admin_state_and_weight(world: World) -> None:
    """Disabled or weight-0 members get no traffic, weights split it, a disabled listener closes."""
    stack, c1 = world.stack, world.c1
    lb = new_lb(stack)
    li = add_listener(stack, lb["id"], 80)
    pool = add_pool(stack, world.web, listener_id=li["id"])
    member = {m["name"]: m["id"] for m in pool["members"]}
    url = f"http://{lb['vip_address']}/"
    ready(world, lb, url)
    assert served_by(c1, url, 12) == {"web1": 4, "web2": 4, "web3": 4}

    def set_member(name: str, **body: Any) -> None:
        update(stack, f"pools/{pool['id']}/members/{member[name]}", "member", body)

    set_member("web2", admin_state_up=False)
    stack.wait_active(lb["id"])
    seen = served_by(c1, url, 12)
    assert set(seen) == {"web1", "web3"} and min(seen.values()) >= 4, seen
    set_member("web3", weight=0)  # drain
    stack.wait_active(lb["id"])
    assert served_by(c1, url, 8) == {"web1": 8}
    set_member("web2", admin_state_up=True, weight=3)
    set_member("web3", weight=1)
    stack.wait_active(lb["id"])
    seen = served_by(c1, url, 40)
    # Weighted round robin: web2 gets about 3 of every 5 (24 of 40; plain round robin: ~13).
    assert 20 <= seen["web2"] <= 28 and min(seen["web1"], seen["web3"]) >= 4, seen

    update(stack, f"listeners/{li['id']}", "listener", {"admin_state_up": False})
    stack.wait_active(lb["id"])
    assert refused(c1, url)
    update(stack, f"listeners/{li['id']}", "listener", {"admin_state_up": True})
    stack.wait_active(lb["id"])
    wait_answers(c1, url, 10)


def test_backup_member(world: World) -> None:
    """A backup member serves only while every primary member is down."""
    stack, c1 = world.stack, world.c1
    primary, backup = world.backend("prim"), world.backend("back")
    lb = new_lb(stack)
    li = add_listener(stack, lb["id"], 80)
    pool = add_pool(stack, [primary], listener_id=li["id"])
    stack.create(
        f"pools/{pool['id']}/members",
        "member",
        {"address": backup.ip, "protocol_port": backup.port, "name": "back", "backup": True},
    )
    stack.create(
        "healthmonitors",
        "healthmonitor",
        {"pool_id": pool["id"], "type": "HTTP", "delay": 1, "timeout": 1, "max_retries": 1,
         "max_retries_down": 1, "url_path": "/"},
    )  # fmt: skip
    url = f"http://{lb['vip_address']}/"
    ready(world, lb, url)
    assert served_by(c1, url, 6) == {"prim": 6}
    primary.stop()
    try:
        wait_for(lambda: who(c1, url) == "back", 15, what="backup serves")
        assert served_by(c1, url, 6) == {"back": 6}
    finally:
        primary.start()
    wait_for(lambda: who(c1, url) == "prim", 15, what="primary serves again")
    assert served_by(c1, url, 6) == {"prim": 6}


def test_connection_limit(world: World) -> None:
    """With connection_limit 1, a second client waits until the first one leaves."""
    stack, c1 = world.stack, world.c1
    lb = new_lb(stack)
    li = add_listener(stack, lb["id"], 80, connection_limit=1)
    add_pool(stack, world.web[:1], listener_id=li["id"])
    vip = lb["vip_address"]
    url = f"http://{vip}/"
    ready(world, lb, url)
    held = connect(c1, vip, 80)
    try:
        assert http_on(held)["server"] == "web1"  # HAProxy has accepted it: 1 of 1
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(world.c2.request, url, timeout=20)
            time.sleep(1.5)
            assert not waiting.done(), "a second connection was served beyond the limit"
            held.close()
            resp = waiting.result(timeout=20)
        assert resp.status == 200
    finally:
        held.close()
    # Raising the limit lets two connections in at once.
    update(stack, f"listeners/{li['id']}", "listener", {"connection_limit": 2})
    stack.wait_active(lb["id"])
    held = connect(c1, vip, 80)
    try:
        assert http_on(held)["server"] == "web1"
        # The request times out (OSError) rather than wait if the limit were still 1.
        assert world.c2.request(url, timeout=3).status == 200
    finally:
        held.close()
