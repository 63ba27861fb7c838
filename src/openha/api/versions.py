"""GET / : Octavia's version document, which openstacksdk and keystoneauth discover first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter(tags=["versions"])

# Octavia lists every minor API version it speaks; clients pick the newest CURRENT one.
_VERSIONS: list[tuple[str, str]] = [
    ("v2.0", "2016-12-11T00:00:00Z"),
    ("v2.1", "2018-04-20T00:00:00Z"),
    ("v2.2", "2018-07-31T00:00:00Z"),
    ("v2.3", "2018-12-18T00:00:00Z"),
    ("v2.4", "2018-12-19T00:00:00Z"),
    ("v2.5", "2019-01-21T00:00:00Z"),
    ("v2.6", "2019-01-25T00:00:00Z"),
    ("v2.7", "2018-01-25T12:00:00Z"),
    ("v2.8", "2019-02-12T00:00:00Z"),
    ("v2.9", "2019-03-04T00:00:00Z"),
    ("v2.10", "2019-03-05T00:00:00Z"),
    ("v2.11", "2019-06-24T00:00:00Z"),
    ("v2.12", "2019-09-11T00:00:00Z"),
    ("v2.13", "2019-09-13T00:00:00Z"),
    ("v2.14", "2019-09-19T00:00:00Z"),
    ("v2.15", "2019-10-02T00:00:00Z"),
    ("v2.16", "2019-12-23T00:00:00Z"),
    ("v2.17", "2020-03-05T00:00:00Z"),
    ("v2.18", "2020-04-24T00:00:00Z"),
    ("v2.19", "2020-06-24T00:00:00Z"),
    ("v2.20", "2020-07-06T00:00:00Z"),
    ("v2.21", "2020-09-03T00:00:00Z"),
    ("v2.22", "2021-02-02T00:00:00Z"),
    ("v2.23", "2021-08-17T00:00:00Z"),
    ("v2.24", "2021-09-23T00:00:00Z"),
    ("v2.25", "2022-03-01T00:00:00Z"),
    ("v2.26", "2022-08-29T00:00:00Z"),
    ("v2.27", "2023-05-05T00:00:00Z"),
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


@router.get("/v2")
@router.get("/v2/")
@router.get("/v2.0")
@router.get("/v2.0/")
def versioned_root(request: Request) -> dict[str, Any]:
    return version_document(request)
