"""Registering OpenHA in a Keystone as Octavia is: the `load-balancer` service, its
endpoints, the service user keystonemiddleware validates tokens with, and Octavia's
roles. Each step finds what exists before creating it, so running it again is safe.

Keystone's v3 API through httpx: what `openha keystone register` runs (and what the
README shows as `openstack` commands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from openha.domain.constants import OCTAVIA_ROLES

SERVICE_TYPE = "load-balancer"
INTERFACES = ("public", "internal", "admin")


@dataclass(frozen=True)
class Registration:
    auth_url: str  # Keystone, e.g. http://keystone:5000/v3
    admin_username: str
    admin_password: str
    endpoint: str  # OpenHA's public URL, e.g. http://openha:9876
    service_password: str
    admin_project_name: str = "admin"
    domain: str = "Default"
    service_username: str = "openha"
    service_project_name: str = "service"
    region: str = "RegionOne"
    service_name: str = "openha"
    # Also list OpenHA as the cloud's `network` service (its Neutron-like networks), for
    # clouds without Neutron: clients look networks and subnets up there.
    network: bool = False
    # Also list OpenHA's certificate store (`<endpoint>/key-manager`) as the cloud's
    # `key-manager` service, for clouds without Barbican: `openstack secret …` finds it.
    key_manager: bool = False


class KeystoneError(RuntimeError):
    pass


class Keystone:
    """An admin's session with Keystone's v3 API."""

    def __init__(self, auth_url: str, username: str, password: str, project: str, domain: str):
        self.base = auth_url.rstrip("/")
        if not self.base.endswith("/v3"):
            self.base += "/v3"
        self.http = httpx.Client(timeout=30)
        self.token = self.issue(username, password, project, domain)
        self.http.headers["X-Auth-Token"] = self.token

    def issue(self, username: str, password: str, project: str, domain: str = "Default") -> str:
        """A project-scoped token for a user."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": username, "domain": {"name": domain}, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"name": domain}}},
            }
        }
        resp = httpx.post(f"{self.base}/auth/tokens", json=body, timeout=30)
        self._check(resp)
        return resp.headers["X-Subject-Token"]

    def _check(self, resp: httpx.Response) -> None:
        if resp.status_code >= 400:
            raise KeystoneError(
                f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
            )

    def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        resp = self.http.request(method, f"{self.base}{path}", json=body, params=params or None)
        self._check(resp)
        return resp.json() if resp.content else None

    def find(self, collection: str, **filters: str) -> dict[str, Any] | None:
        found = self.call("GET", f"/{collection}", **filters)[collection]
        return found[0] if found else None

    def ensure(self, collection: str, singular: str, body: dict[str, Any], **filters: str) -> str:
        found = self.find(collection, **filters)
        if found is None:
            found = self.call("POST", f"/{collection}", {singular: body})[singular]
        return str(found["id"])

    def domain_id(self, name: str) -> str:
        found = self.find("domains", name=name)
        if found is None:
            raise KeystoneError(f"no domain {name!r}")
        return str(found["id"])

    def project(self, name: str, domain_id: str) -> str:
        return self.ensure(
            "projects",
            "project",
            {"name": name, "domain_id": domain_id},
            name=name,
            domain_id=domain_id,
        )

    def user(self, name: str, password: str, domain_id: str, project_id: str | None = None) -> str:
        found = self.find("users", name=name, domain_id=domain_id)
        if found is not None:
            self.call("PATCH", f"/users/{found['id']}", {"user": {"password": password}})
            return str(found["id"])
        body = {"name": name, "password": password, "domain_id": domain_id}
        if project_id:
            body["default_project_id"] = project_id
        return str(self.call("POST", "/users", {"user": body})["user"]["id"])

    def role(self, name: str) -> str:
        return self.ensure("roles", "role", {"name": name}, name=name)

    def grant(self, project_id: str, user_id: str, role_id: str) -> None:
        self.call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")

    def close(self) -> None:
        self.http.close()


def register(reg: Registration) -> dict[str, str]:
    """Create (or find) everything OpenHA needs in Keystone; returns the ids made."""
    ks = Keystone(
        reg.auth_url, reg.admin_username, reg.admin_password, reg.admin_project_name, reg.domain
    )
    try:
        domain = ks.domain_id(reg.domain)
        project = ks.project(reg.service_project_name, domain)
        user = ks.user(reg.service_username, reg.service_password, domain, project)
        # keystonemiddleware validates other users' tokens: Keystone lets the `service`
        # role do that (Octavia's deployments grant admin, which also works).
        for name in ("service", "admin"):
            ks.grant(project, user, ks.role(name))
        for name in OCTAVIA_ROLES:
            ks.role(name)
        regions = ks.call("GET", "/regions")["regions"]
        if reg.region not in {r["id"] for r in regions}:
            ks.call("POST", "/regions", {"region": {"id": reg.region}})
        base = reg.endpoint.rstrip("/")
        services = [(SERVICE_TYPE, reg.service_name, base)]
        if reg.network:
            services.append(("network", f"{reg.service_name}-networks", base))
        if reg.key_manager:
            services.append(("key-manager", f"{reg.service_name}-certstore", f"{base}/key-manager"))
        ids = [_service(ks, reg, kind, name, url) for kind, name, url in services]
        return {"service_id": ids[0], "user_id": user, "project_id": project}
    finally:
        ks.close()


def _service(ks: Keystone, reg: Registration, kind: str, name: str, url: str) -> str:
    """The service of type `kind` and its three endpoints at `url`."""
    service = ks.ensure(
        "services", "service", {"type": kind, "name": name, "enabled": True}, type=kind
    )
    for interface in INTERFACES:
        found = ks.find("endpoints", service_id=service, interface=interface)
        body = {
            "service_id": service,
            "interface": interface,
            "url": url,
            "region_id": reg.region,
            "enabled": True,
        }
        if found is None:
            ks.call("POST", "/endpoints", {"endpoint": body})
        elif found["url"] != url:
            ks.call("PATCH", f"/endpoints/{found['id']}", {"endpoint": body})
    return service
