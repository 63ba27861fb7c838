"""Who may do what: Octavia's policy, enforced by oslo.policy, for every authenticated route.

One `Policy` per application holds the rules (`openha.api.policy_defaults`, overridden
by the operator's Octavia ``policy.yaml`` named by ``OPENHA_POLICY_FILE``). Every
route's rule is found here from its method and path (`rule_for`), so that a route
needs no code of its own to be authorised:

- Octavia's routes use Octavia's rule names (``os_load-balancer_api:pool:get_one``);
- routes under ``/v2/manage`` (the operator API, OpenHA's own) use ``openha:manage``
  unless `ROUTE_RULES` names another: adding an operator route needs nothing here;
- anything else not listed needs ``context_is_admin``.

`openha.api.context` applies the rule twice, as Octavia does: on the caller's own
project before the route runs (no role at all: 403, even on reads), and on the
object's project once the route found it (another project's object: 403).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import opts as policy_opts
from oslo_policy import policy as oslo_policy

from openha.api import policy_defaults as d

# Octavia's resources as they appear in paths (the /v2/lbaas and /v2.0 aliases folded).
_RESOURCES = {
    "loadbalancers": "loadbalancer",
    "listeners": "listener",
    "pools": "pool",
    "healthmonitors": "healthmonitor",
    "l7policies": "l7policy",
    "flavors": "flavor",
    "flavorprofiles": "flavor-profile",
    "availabilityzones": "availability-zone",
    "availabilityzoneprofiles": "availability-zone-profile",
}


def _octavia(resource: str, action: str) -> str:
    return d.octavia_rule_name(resource, action)


def _crud_routes(path: str, resource: str, ident: str) -> dict[str, str]:
    one = f"{path}/{{{ident}}}"
    return {
        f"GET {path}": _octavia(resource, "get_all"),
        f"POST {path}": _octavia(resource, "post"),
        f"GET {one}": _octavia(resource, "get_one"),
        f"PUT {one}": _octavia(resource, "put"),
        f"DELETE {one}": _octavia(resource, "delete"),
    }


def _build_routes() -> dict[str, str]:
    routes: dict[str, str] = {}
    for plural, resource in _RESOURCES.items():
        routes |= _crud_routes(f"/v2/{plural}", resource, "ident")
    lb = "/v2/loadbalancers/{lb_id}"
    members = "/v2/pools/{pool_id}/members"
    rules = "/v2/l7policies/{l7policy_id}/rules"
    routes |= {
        f"PUT {lb}": _octavia("loadbalancer", "put"),
        f"GET {lb}/stats": _octavia("loadbalancer", "get_stats"),
        f"GET {lb}/status": _octavia("loadbalancer", "get_status"),
        f"GET {lb}/statuses": _octavia("loadbalancer", "get_status"),
        f"GET {lb}/logs": _octavia("loadbalancer", "get_one"),
        f"GET {lb}/diagnostics": _octavia("loadbalancer", "get_one"),
        "GET /v2/events": d.EVENT_READ,
        "GET /v2/webhooks": d.WEBHOOK_READ,
        "GET /v2/webhooks/{ident}": d.WEBHOOK_READ,
        "GET /v2/webhooks/{webhook_id}/deliveries": d.WEBHOOK_READ,
        "POST /v2/webhooks": d.WEBHOOK_WRITE,
        "PUT /v2/webhooks/{webhook_id}": d.WEBHOOK_WRITE,
        "DELETE /v2/webhooks/{ident}": d.WEBHOOK_WRITE,
        f"PUT {lb}/failover": _octavia("loadbalancer", "put_failover"),
        "PUT /v2/listeners/{listener_id}": _octavia("listener", "put"),
        "GET /v2/listeners/{listener_id}/stats": _octavia("listener", "get_stats"),
        "PUT /v2/pools/{pool_id}": _octavia("pool", "put"),
        "PUT /v2/healthmonitors/{hm_id}": _octavia("healthmonitor", "put"),
        "PUT /v2/l7policies/{l7policy_id}": _octavia("l7policy", "put"),
        f"GET {members}": _octavia("member", "get_all"),
        f"POST {members}": _octavia("member", "post"),
        f"PUT {members}": _octavia("member", "put"),
        f"GET {members}/{{ident}}": _octavia("member", "get_one"),
        f"PUT {members}/{{member_id}}": _octavia("member", "put"),
        f"DELETE {members}/{{ident}}": _octavia("member", "delete"),
        f"GET {rules}": _octavia("l7rule", "get_all"),
        f"POST {rules}": _octavia("l7rule", "post"),
        f"GET {rules}/{{ident}}": _octavia("l7rule", "get_one"),
        f"PUT {rules}/{{rule_id}}": _octavia("l7rule", "put"),
        f"DELETE {rules}/{{ident}}": _octavia("l7rule", "delete"),
        "GET /v2/quotas": _octavia("quota", "get_all"),
        "GET /v2/quotas/defaults": _octavia("quota", "get_defaults"),
        "GET /v2/quotas/{project_id}": _octavia("quota", "get_one"),
        "GET /v2/quotas/{project_id}/default": _octavia("quota", "get_defaults"),
        "PUT /v2/quotas/{project_id}": _octavia("quota", "put"),
        "DELETE /v2/quotas/{project_id}": _octavia("quota", "delete"),
        "GET /v2/providers": _octavia("provider", "get_all"),
        "GET /v2/providers/{provider}/flavor_capabilities": _octavia("provider-flavor", "get_all"),
        "GET /v2/providers/{provider}/availability_zone_capabilities": _octavia(
            "provider-availability-zone", "get_all"
        ),
        "GET /v2/octavia/amphorae": _octavia("amphora", "get_all"),
        "GET /v2/octavia/amphorae/{ident}": _octavia("amphora", "get_one"),
        "GET /v2/octavia/amphorae/{amphora_id}/stats": _octavia("amphora", "get_stats"),
        "PUT /v2/octavia/amphorae/{amphora_id}/failover": _octavia("amphora", "put_failover"),
        "PUT /v2/octavia/amphorae/{amphora_id}/config": _octavia("amphora", "put_config"),
        "DELETE /v2/octavia/amphorae/{ident}": _octavia("amphora", "delete"),
        "GET /metrics": d.MANAGE,
    }
    for kind, ident in (("secrets", "secret_id"), ("containers", "container_id")):
        one = f"/key-manager/v1/{kind}/{{{ident}}}"
        routes |= {
            f"GET /key-manager/v1/{kind}": d.SECRET_READ,
            f"POST /key-manager/v1/{kind}": d.SECRET_WRITE,
            f"GET {one}": d.SECRET_READ,
            f"DELETE {one}": d.SECRET_WRITE,
        }
    routes |= {
        "GET /key-manager/v1/secrets/{secret_id}/payload": d.SECRET_READ,
        "PUT /key-manager/v1/secrets/{secret_id}": d.SECRET_WRITE,
    }
    for kind in ("networks", "subnets", "ports", "extensions"):
        routes[f"GET /v2/{kind}"] = d.NETWORK_READ
        routes[f"GET /v2/{kind}/{{ident}}"] = d.NETWORK_READ
        routes[f"GET /v2/{kind}/{{ident}}/tags"] = d.NETWORK_READ
    return routes


ROUTE_RULES: dict[str, str] = _build_routes()


def normalise(method: str, path: str) -> str:
    """ "METHOD /v2/<path>" with the /v2.0 and /v2/lbaas aliases folded into /v2."""
    if path.startswith("/v2.0"):
        path = "/v2" + path.removeprefix("/v2.0")
    if len(path) > 1:
        path = path.rstrip("/")  # Barbican's clients post to ".../secrets/"
    return f"{method} " + path.replace("/v2/lbaas/", "/v2/", 1)


def rule_for(method: str, path: str) -> str:
    """The rule guarding a route, from its method and path template."""
    key = normalise(method, path)
    found = ROUTE_RULES.get(key)
    if found is not None:
        return found
    route_path = key.split(" ", 1)[1]
    if route_path.startswith("/v2/manage/"):
        return d.MANAGE
    if route_path.startswith(("/v2/networks", "/v2/subnets")):
        return d.NETWORK_WRITE
    return "context_is_admin"


@oslo_policy.register("is_admin")
class IsAdminCheck(oslo_policy.Check):
    """Octavia's ``is_admin:True``: the credentials' own is_admin flag."""

    def __init__(self, kind: str, match: str) -> None:
        self.expected = match.lower() == "true"
        super().__init__(kind, str(self.expected))

    def __call__(
        self,
        target: Mapping[str, Any],
        creds: MutableMapping[str, Any],
        enforcer: oslo_policy.Enforcer,
        current_rule: str | None = None,
    ) -> bool:
        return bool(creds.get("is_admin")) == self.expected


class Policy:
    """The rules and their enforcer; `policy_file` is an operator's Octavia policy.yaml."""

    def __init__(self, policy_file: Path | None = None) -> None:
        conf = cfg.ConfigOpts()
        conf([], project="openha", default_config_files=[], default_config_dirs=[])
        # What Octavia ships: the keystone default roles, and the deprecated
        # load-balancer_* roles still honoured beside them (oslo.policy ORs them in).
        policy_opts.set_defaults(conf, enforce_new_defaults=False, enforce_scope=False)
        self.enforcer = oslo_policy.Enforcer(
            conf,
            policy_file=str(policy_file.resolve()) if policy_file else None,
            use_conf=True,
        )
        self.enforcer.suppress_deprecation_warnings = True
        self.enforcer.register_defaults(list(d.list_rules()))
        self.enforcer.load_rules()

    def credentials(
        self, project_id: str | None, roles: Iterable[str], user_id: str | None
    ) -> dict[str, Any]:
        creds: dict[str, Any] = {
            "project_id": project_id,
            "roles": sorted(roles),
            "user_id": user_id,
            "is_admin": False,
        }
        creds["is_admin"] = bool(self.enforcer.enforce("context_is_admin", creds, creds))
        return creds

    def global_rule(self, rule: str) -> str | None:
        """The rule letting a list show every project's objects (Octavia's `get_all-global`)."""
        wide = rule + "-global"
        return wide if wide in self.enforcer.registered_rules else None

    def allowed(self, rule: str, project_id: str | None, creds: dict[str, Any]) -> bool:
        return bool(
            self.enforcer.authorize(rule, {"project_id": project_id}, creds, do_raise=False)
        )
