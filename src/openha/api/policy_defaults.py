"""The policy rules OpenHA enforces: Octavia 19's, name for name and check for check.

The rule names, check strings, deprecated (``load-balancer_*``) role rules and
descriptions below are copied from Octavia 19.0.0 (``octavia/policies/*.py`` and
the ``RBAC_*`` / ``RULE_API_*`` constants of ``octavia/common/constants.py``),
Copyright the Octavia authors, Apache License 2.0: an operator's Octavia
``policy.yaml`` therefore means the same here. OpenHA's own routes add a few
``openha:*`` rules at the end, defaulting to Octavia's roles.

`list_rules` is the ``oslo.policy.policies`` entry point (namespace ``openha``), so
``oslopolicy-sample-generator --namespace openha`` lists every rule.
"""

from __future__ import annotations

from collections.abc import Iterator

from oslo_policy import policy

API = "os_load-balancer_api"
ADMIN = "rule:load-balancer:admin"
READ = "rule:load-balancer:read"
READ_GLOBAL = "rule:load-balancer:read-global"
WRITE = "rule:load-balancer:write"
READ_QUOTA = "rule:load-balancer:read-quota"
READ_QUOTA_GLOBAL = "rule:load-balancer:read-quota-global"
WRITE_QUOTA = "rule:load-balancer:write-quota"
MEMBER_READ = f"{READ} or rule:service"
# A project's own objects only: no global observer reads another's private keys.
OWN_READ = (
    "rule:load-balancer:observer_and_owner or rule:load-balancer:member_and_owner"
    " or rule:load-balancer:admin"
)
# OpenHA's own: the operator API (/v2/manage/*) and its Neutron-like networks.
MANAGE = "openha:manage"
NETWORK_READ = "openha:network:read"
NETWORK_WRITE = "openha:network:write"
# A project's own event log and webhooks (/v2/lbaas/events, /v2/lbaas/webhooks).
EVENT_READ = "openha:event:read"
WEBHOOK_READ = "openha:webhook:read"
WEBHOOK_WRITE = "openha:webhook:write"
# The embedded certificate store (/key-manager/v1): whoever may build a project's load
# balancers may store and read the certificates its TLS listeners name.
SECRET_READ = "openha:secret:read"
SECRET_WRITE = "openha:secret:write"

_SCOPE = ["project"]
_DEPRECATED_REASON = (
    "The Octavia Advanced RBAC roles are deprecated in favor of the keystone default roles."
)


def _deprecated(name: str, check: str) -> policy.DeprecatedRule:
    return policy.DeprecatedRule(
        name=name, check_str=check, deprecated_reason=_DEPRECATED_REASON, deprecated_since="W"
    )


def _rule(
    name: str, check: str, deprecated: policy.DeprecatedRule | None = None
) -> policy.RuleDefault:
    return policy.RuleDefault(
        name=name, check_str=check, deprecated_rule=deprecated, scope_types=_SCOPE
    )


BASE = [
    # octavia/policies/base.py
    _rule(
        "load-balancer:read",
        "rule:load-balancer:observer_and_owner or rule:load-balancer:global_observer or "
        "rule:load-balancer:member_and_owner or rule:load-balancer:admin",
    ),
    _rule(
        "load-balancer:read-global",
        "rule:load-balancer:global_observer or rule:load-balancer:admin",
    ),
    _rule("load-balancer:write", "rule:load-balancer:member_and_owner or rule:load-balancer:admin"),
    _rule(
        "load-balancer:read-quota",
        "rule:load-balancer:observer_and_owner or rule:load-balancer:global_observer or "
        "rule:load-balancer:member_and_owner or rule:load-balancer:quota-admin or "
        "rule:load-balancer:admin",
    ),
    _rule(
        "load-balancer:read-quota-global",
        "rule:load-balancer:global_observer or rule:load-balancer:quota-admin or "
        "rule:load-balancer:admin",
    ),
    _rule(
        "load-balancer:write-quota", "rule:load-balancer:quota-admin or rule:load-balancer:admin"
    ),
    # octavia/policies/keystone_default_roles.py, with advanced_rbac.py's deprecated rules
    _rule("project-member", "role:member and project_id:%(project_id)s"),
    _rule("project-reader", "role:reader and project_id:%(project_id)s"),
    _rule(
        "context_is_admin",
        "role:admin",
        _deprecated("context_is_admin", "role:admin or role:load-balancer_admin"),
    ),
    _rule(
        "load-balancer:admin",
        "is_admin:True or role:admin",
        _deprecated(
            "load-balancer:admin", "is_admin:True or role:admin or role:load-balancer_admin"
        ),
    ),
    _rule("service", "role:service"),
    _rule(
        "load-balancer:global_observer",
        "role:admin",
        _deprecated("load-balancer:global_observer", "role:load-balancer_global_observer"),
    ),
    _rule(
        "load-balancer:member_and_owner",
        "rule:project-member",
        _deprecated(
            "load-balancer:member_and_owner",
            "role:load-balancer_member and rule:load-balancer:owner",
        ),
    ),
    _rule(
        "load-balancer:observer_and_owner",
        "rule:project-reader",
        _deprecated(
            "load-balancer:observer_and_owner",
            "role:load-balancer_observer and rule:load-balancer:owner",
        ),
    ),
    _rule(
        "load-balancer:quota-admin",
        "role:admin",
        _deprecated("load-balancer:quota-admin", "role:load-balancer_quota_admin"),
    ),
    # octavia/policies/advanced_rbac.py
    _rule("load-balancer:owner", "project_id:%(project_id)s"),
]

# (resource, action, check, description, method, path): octavia/policies/<resource>.py
_LB = "/v2/lbaas/loadbalancers"
_OPS: list[tuple[str, str, str, str, str, str]] = [
    ("loadbalancer", "get_all", READ, "List Load Balancers", "GET", _LB),
    (
        "loadbalancer",
        "get_all-global",
        READ_GLOBAL,
        "List Load Balancers including resources owned by others",
        "GET",
        _LB,
    ),
    ("loadbalancer", "post", WRITE, "Create a Load Balancer", "POST", _LB),
    (
        "loadbalancer",
        "post:vip_sg_ids",
        WRITE,
        "Create a Load Balancer with VIP Security Groups",
        "POST",
        _LB,
    ),
    (
        "loadbalancer",
        "get_one",
        READ,
        "Show Load Balancer details",
        "GET",
        f"{_LB}/{{loadbalancer_id}}",
    ),
    ("loadbalancer", "put", WRITE, "Update a Load Balancer", "PUT", f"{_LB}/{{loadbalancer_id}}"),
    (
        "loadbalancer",
        "put:vip_sg_ids",
        WRITE,
        "Update the VIP Security Groups of a Load Balancer",
        "PUT",
        f"{_LB}/{{loadbalancer_id}}",
    ),
    (
        "loadbalancer",
        "delete",
        WRITE,
        "Remove a Load Balancer",
        "DELETE",
        f"{_LB}/{{loadbalancer_id}}",
    ),
    (
        "loadbalancer",
        "get_stats",
        READ,
        "Show Load Balancer statistics",
        "GET",
        f"{_LB}/{{loadbalancer_id}}/stats",
    ),
    (
        "loadbalancer",
        "get_status",
        READ,
        "Show Load Balancer status",
        "GET",
        f"{_LB}/{{loadbalancer_id}}/status",
    ),
    (
        "loadbalancer",
        "put_failover",
        ADMIN,
        "Failover a Load Balancer",
        "PUT",
        f"{_LB}/{{loadbalancer_id}}/failover",
    ),
]


def _crud(
    resource: str,
    label: str,
    path: str,
    ident: str,
    *,
    global_list: bool = True,
    list_check: str = READ,
    write: str = WRITE,
    read: str = READ,
    post: bool = True,
) -> list[tuple[str, str, str, str, str, str]]:
    one = f"{path}/{{{ident}}}"
    ops = [(resource, "get_all", list_check, f"List {label}s", "GET", path)]
    if global_list:
        ops.append(
            (
                resource,
                "get_all-global",
                READ_GLOBAL,
                f"List {label}s including resources owned by others",
                "GET",
                path,
            )
        )
    if post:
        ops.append((resource, "post", write, f"Create a {label}", "POST", path))
    ops += [
        (resource, "get_one", read, f"Show {label} details", "GET", one),
        (resource, "put", write, f"Update a {label}", "PUT", one),
        (resource, "delete", write, f"Remove a {label}", "DELETE", one),
    ]
    return ops


_OPS += _crud("listener", "Listener", "/v2/lbaas/listeners", "listener_id")
_OPS.append(
    (
        "listener",
        "get_stats",
        READ,
        "Show Listener statistics",
        "GET",
        "/v2/lbaas/listeners/{listener_id}/stats",
    )
)
_OPS += _crud("pool", "Pool", "/v2/lbaas/pools", "pool_id")
_OPS += _crud(
    "member",
    "Member",
    "/v2/lbaas/pools/{pool_id}/members",
    "member_id",
    global_list=False,
    list_check=MEMBER_READ,
)
_OPS += _crud("healthmonitor", "Health Monitor", "/v2/lbaas/healthmonitors", "healthmonitor_id")
_OPS += _crud("l7policy", "L7 Policy", "/v2/lbaas/l7policies", "l7policy_id")
_OPS += _crud(
    "l7rule", "L7 Rule", "/v2/lbaas/l7policies/{l7policy_id}/rules", "l7rule_id", global_list=False
)
_OPS += [
    ("quota", "get_all", READ_QUOTA, "List Quotas", "GET", "/v2/lbaas/quotas"),
    (
        "quota",
        "get_all-global",
        READ_QUOTA_GLOBAL,
        "List Quotas including resources owned by others",
        "GET",
        "/v2/lbaas/quotas",
    ),
    ("quota", "get_one", READ_QUOTA, "Show Quota details", "GET", "/v2/lbaas/quotas/{project_id}"),
    ("quota", "put", WRITE_QUOTA, "Update a Quota", "PUT", "/v2/lbaas/quotas/{project_id}"),
    ("quota", "delete", WRITE_QUOTA, "Reset a Quota", "DELETE", "/v2/lbaas/quotas/{project_id}"),
    (
        "quota",
        "get_defaults",
        READ_QUOTA,
        "Show Default Quota for a Project",
        "GET",
        "/v2/lbaas/quotas/{project_id}/default",
    ),
]
_AMP = "/v2/octavia/amphorae"
_OPS += [
    ("amphora", "get_all", ADMIN, "List Amphorae", "GET", _AMP),
    ("amphora", "get_one", ADMIN, "Show Amphora details", "GET", f"{_AMP}/{{amphora_id}}"),
    ("amphora", "delete", ADMIN, "Delete an Amphora", "DELETE", f"{_AMP}/{{amphora_id}}"),
    (
        "amphora",
        "put_config",
        ADMIN,
        "Update Amphora Agent Configuration",
        "PUT",
        f"{_AMP}/{{amphora_id}}/config",
    ),
    (
        "amphora",
        "put_failover",
        ADMIN,
        "Failover Amphora",
        "PUT",
        f"{_AMP}/{{amphora_id}}/failover",
    ),
    (
        "amphora",
        "get_stats",
        ADMIN,
        "Show Amphora statistics",
        "GET",
        f"{_AMP}/{{amphora_id}}/stats",
    ),
    ("provider", "get_all", READ, "List enabled providers", "GET", "/v2/lbaas/providers"),
    (
        "provider-flavor",
        "get_all",
        ADMIN,
        "List the provider flavor capabilities.",
        "GET",
        "/v2/lbaas/providers/{provider}/flavor_capabilities",
    ),
    (
        "provider-availability-zone",
        "get_all",
        ADMIN,
        "List the provider availability zone capabilities.",
        "GET",
        "/v2/lbaas/providers/{provider}/availability_zone_capabilities",
    ),
]
_OPS += _crud(
    "flavor", "Flavor", "/v2.0/lbaas/flavors", "flavor_id", global_list=False, write=ADMIN
)
_OPS += _crud(
    "flavor-profile",
    "Flavor Profile",
    "/v2.0/lbaas/flavorprofiles",
    "flavor_profile_id",
    global_list=False,
    list_check=ADMIN,
    write=ADMIN,
    read=ADMIN,
)
_OPS += _crud(
    "availability-zone",
    "Availability Zone",
    "/v2.0/lbaas/availabilityzones",
    "availability_zone_id",
    global_list=False,
    write=ADMIN,
)
_OPS += _crud(
    "availability-zone-profile",
    "Availability Zone Profile",
    "/v2.0/lbaas/availabilityzoneprofiles",
    "availability_zone_profile_id",
    global_list=False,
    list_check=ADMIN,
    write=ADMIN,
    read=ADMIN,
)


def octavia_rule_name(resource: str, action: str) -> str:
    return f"{API}:{resource}:{action}"


OCTAVIA_API = [
    policy.DocumentedRuleDefault(
        name=octavia_rule_name(resource, action),
        check_str=check,
        description=description,
        operations=[{"method": method, "path": path}],
    )
    for resource, action, check, description, method, path in _OPS
]

OPENHA = [
    policy.DocumentedRuleDefault(
        name=MANAGE,
        check_str=ADMIN,
        description="Call OpenHA's operator API (/v2/manage/*) and read /metrics",
        operations=[
            {"method": "GET", "path": "/v2/manage/*"},
            {"method": "GET", "path": "/metrics"},
        ],
    ),
    policy.DocumentedRuleDefault(
        name=NETWORK_READ,
        check_str=READ,
        description="Read OpenHA's networks, subnets and ports (own and shared ones)",
        operations=[{"method": "GET", "path": "/v2.0/networks"}],
    ),
    policy.DocumentedRuleDefault(
        name=EVENT_READ,
        check_str=READ,
        description="Read a project's own events (/v2/lbaas/events)",
        operations=[{"method": "GET", "path": "/v2/lbaas/events"}],
    ),
    policy.DocumentedRuleDefault(
        name=WEBHOOK_READ,
        check_str=READ,
        description="List and show a project's webhooks and their deliveries",
        operations=[{"method": "GET", "path": "/v2/lbaas/webhooks"}],
    ),
    policy.DocumentedRuleDefault(
        name=WEBHOOK_WRITE,
        check_str=WRITE,
        description="Create, change and remove a project's webhooks",
        operations=[{"method": "POST", "path": "/v2/lbaas/webhooks"}],
    ),
    policy.DocumentedRuleDefault(
        name=SECRET_READ,
        check_str=OWN_READ,
        description="List and read a project's secrets and containers in the certificate store",
        operations=[{"method": "GET", "path": "/key-manager/v1/secrets"}],
    ),
    policy.DocumentedRuleDefault(
        name=SECRET_WRITE,
        check_str=WRITE,
        description="Store and remove a project's secrets and containers",
        operations=[{"method": "POST", "path": "/key-manager/v1/secrets"}],
    ),
    policy.DocumentedRuleDefault(
        name=NETWORK_WRITE,
        check_str=ADMIN,
        description="Create, change and remove OpenHA's networks and subnets",
        operations=[{"method": "POST", "path": "/v2.0/networks"}],
    ),
]


def list_rules() -> Iterator[policy.RuleDefault]:
    yield from BASE
    yield from OCTAVIA_API
    yield from OPENHA
