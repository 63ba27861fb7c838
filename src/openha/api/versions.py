"""GET / : Octavia's version document, which openstacksdk and keystoneauth discover first;
GET /v2 and the other sub-roots: the string "v2", as Octavia answers there."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["versions"])

# Octavia lists every minor API version it speaks, with the dates of its own
# octavia/api/root_controller.py (v2.7's date does precede v2.6's there); clients
# pick the newest, the one marked CURRENT.
_VERSIONS: list[tuple[str, str]] = [
    ("v2.0", "2016-12-11T00:00:00Z"),
    ("v2.1", "2018-04-20T00:00:00Z"),
    ("v2.2", "2018-07-31T00:00:00Z"),
    ("v2.3", "2018-12-18T00:00:00Z"),
    ("v2.4", "2018-12-19T00:00:00Z"),  # amphora statistics
    ("v2.5", "2019-01-21T00:00:00Z"),  # tags
    ("v2.6", "2019-01-25T00:00:00Z"),  # flavors
    ("v2.7", "2018-01-25T12:00:00Z"),  # amphora config update
    ("v2.8", "2019-02-12T00:00:00Z"),  # TLS client authentication
    ("v2.9", "2019-03-04T00:00:00Z"),  # HTTP redirect code
    ("v2.10", "2019-03-05T00:00:00Z"),  # health monitor host header
    ("v2.11", "2019-06-24T00:00:00Z"),  # additive batch member update
    ("v2.12", "2019-09-11T00:00:00Z"),  # VIP ACL
    ("v2.13", "2019-09-13T00:00:00Z"),  # SOURCE_IP_PORT
    ("v2.14", "2019-11-10T00:00:00Z"),  # availability zones
    ("v2.15", "2020-03-10T00:00:00Z"),  # TLS ciphers
    ("v2.16", "2020-03-15T00:00:00Z"),  # UDP health check types
    ("v2.17", "2020-04-29T00:00:00Z"),  # listener TLS versions
    ("v2.18", "2020-04-29T01:00:00Z"),  # pool TLS versions
    ("v2.19", "2020-05-12T00:00:00Z"),  # L7 quotas
    ("v2.20", "2020-08-02T00:00:00Z"),  # listener ALPN
    ("v2.21", "2020-09-03T00:00:00Z"),  # amphora delete
    ("v2.22", "2020-09-04T00:00:00Z"),  # PROXYV2 pools
    ("v2.23", "2020-09-07T00:00:00Z"),  # SCTP
    ("v2.24", "2020-10-15T00:00:00Z"),  # pool ALPN
    ("v2.25", "2021-10-02T00:00:00Z"),  # PROMETHEUS listeners
    ("v2.26", "2022-08-29T00:00:00Z"),  # additional VIPs
    ("v2.27", "2023-05-05T00:00:00Z"),  # HSTS
    ("v2.28", "2023-11-08T00:00:00Z"),  # VIP vnic_type
    ("v2.29", "2024-10-15T00:00:00Z"),  # VIP security groups
    ("v2.30", "2025-02-26T00:00:00Z"),  # member port SR-IOV
]


def base_url(request: Request) -> str:
    public = request.app.state.settings.api_public_url
    return (public or str(request.base_url)).rstrip("/")


def version_document(request: Request) -> dict[str, Any]:
    root = base_url(request)
    versions = []
    for i, (ident, updated) in enumerate(_VERSIONS):
        status = "CURRENT" if i == len(_VERSIONS) - 1 else "SUPPORTED"
        versions.append(
            {
                "id": ident,
                "status": status,
                "updated": updated,
                "links": [{"href": f"{root}/v2", "rel": "self"}],
            }
        )
    return {"versions": versions}


@router.get("/")
def root(request: Request) -> dict[str, Any]:
    return version_document(request)


# Below the root Octavia answers with the bare string "v2" (its V2Controller.get),
# under /v2 and /v2.0 alike, and so do the /lbaas and /octavia sub-roots.
@router.get("/v2")
@router.get("/v2/")
@router.get("/v2.0")
@router.get("/v2.0/")
@router.get("/v2/lbaas")
@router.get("/v2.0/lbaas")
@router.get("/v2/octavia")
@router.get("/v2.0/octavia")
def versioned_root() -> str:
    return "v2"
