"""`openha sync|reload|recover|diff|export|import|audit`: the operator's repairs and backups.

Thin clients of the operator API (`/v2/manage/...`, admin token): the API URL and
token come from `--api-url` / `--token` (or `OS_TOKEN`), else from the clouds.yaml
that `openha up` writes. A load balancer is named by its id or its (unique) name.

`export` writes `{"openha_export": 1, "loadbalancers": [<create bodies>]}`; `import`
creates each load balancer with one fully populated create, skipping those whose
name its project already has (so running it twice creates nothing twice), and
`--dry-run` sends every create with `?dry_run=true`: validated, nothing stored.
"""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from openha import clouds, opsclient
from openha.domain.constants import PENDING_DELETE
from openha.settings import Settings

EXPORT_FORMAT = 1
err = Console(stderr=True, soft_wrap=True, highlight=False)

ApiUrl = Annotated[
    str | None, typer.Option("--api-url", help="The OpenHA API. Default: clouds.yaml's.")
]
Token = Annotated[str | None, typer.Option("--token", envvar="OS_TOKEN", help="An admin token.")]
LbArg = Annotated[str, typer.Argument(help="The load balancer: its id or its name.")]


def client(api_url: str | None, token: str | None) -> httpx.Client:
    settings = Settings()
    url, secret = clouds.api_access(settings.state_dir, settings.api_bind, api_url, token)
    if not secret:
        err.print(clouds.NO_TOKEN)
        raise typer.Exit(2)
    return httpx.Client(
        base_url=url, headers={"X-Auth-Token": secret}, timeout=120, trust_env=False
    )


def checked(resp: httpx.Response, *ok: int) -> Any:
    if resp.status_code not in (ok or (200,)):
        err.print(
            f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text[:500]}"
        )
        raise typer.Exit(1)
    return resp.json() if resp.content else {}


def lb_id_of(api: httpx.Client, lb: str) -> str:
    try:
        return str(uuid.UUID(lb))
    except ValueError:
        pass
    found = checked(api.get("/v2/lbaas/loadbalancers", params={"name": lb}))["loadbalancers"]
    if len(found) != 1:
        err.print(f"{len(found)} load balancers are named {lb!r}")
        raise typer.Exit(1)
    return str(found[0]["id"])


def all_pages(api: httpx.Client, path: str, key: str, params: dict[str, Any]) -> Iterator[Any]:
    marker = None
    while True:
        page = checked(
            api.get(
                path,
                params={**params, "limit": 500, "marker": marker}
                if marker
                else {**params, "limit": 500},
            )
        )
        items = page[key]
        yield from items
        if len(items) < 500:
            return
        marker = items[-1]["id"]


def _action(name: str, lb: str, api_url: str | None, token: str | None) -> None:
    """Start the repair (an operation) and follow it to its end, step by step."""
    out = Console(soft_wrap=True, highlight=False)
    try:
        with opsclient.connect(Settings(), api_url, token) as api:
            op = opsclient.repair(api, lb, name)
            op = opsclient.follow(api, op["id"], out, interval=0.3)
    except opsclient.OpsError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    if op["state"] == "FAILED":
        err.print(f"{name} failed: {op['error']}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the commands to the `openha` application."""

    @app.command()
    def sync(lb: LbArg, api_url: ApiUrl = None, token: Token = None) -> None:
        """Re-render and re-push a load balancer's config to every instance (drift repair)."""
        _action("sync", lb, api_url, token)

    @app.command()
    def reload(lb: LbArg, api_url: ApiUrl = None, token: Token = None) -> None:
        """Hitless reload of every instance of a load balancer."""
        _action("reload", lb, api_url, token)

    @app.command()
    def recover(lb: LbArg, api_url: ApiUrl = None, token: Token = None) -> None:
        """Force-recover a load balancer: clear its error, rebuild, re-push; step by step."""
        _action("force-recover", lb, api_url, token)

    @app.command()
    def diff(lb: LbArg, api_url: ApiUrl = None, token: Token = None) -> None:
        """What the instances run against what the database renders (exit 1: they differ)."""
        with client(api_url, token) as api:
            found = checked(api.get(f"/v2/manage/loadbalancers/{lb_id_of(api, lb)}/diff"))
        sys.stdout.write(found["diff"])
        for key in found["unreachable"]:
            err.print(f"{key}: its agent did not answer")
        if not found["in_sync"]:
            raise typer.Exit(1)

    @app.command("export")
    def export(
        project: Annotated[str | None, typer.Option(help="Only this project's.")] = None,
        everything: Annotated[bool, typer.Option("--all", help="Every project's.")] = False,
        api_url: ApiUrl = None,
        token: Token = None,
    ) -> None:
        """Print load balancers as create bodies (JSON) for `openha import`."""
        if bool(project) == everything:
            err.print("give --project P or --all")
            raise typer.Exit(2)
        params = {"project_id": project} if project else {}
        bodies = []
        with client(api_url, token) as api:
            for lb in all_pages(api, "/v2/lbaas/loadbalancers", "loadbalancers", params):
                if lb["provisioning_status"] == PENDING_DELETE:
                    continue
                exported = checked(api.get(f"/v2/manage/loadbalancers/{lb['id']}/export"))
                bodies.append(exported["loadbalancer"])
        typer.echo(json.dumps({"openha_export": EXPORT_FORMAT, "loadbalancers": bodies}, indent=1))
        err.print(f"{len(bodies)} load balancer(s) exported")

    @app.command("import")
    def import_(
        path: Annotated[Path, typer.Argument(help="A file `openha export` wrote.")],
        project: Annotated[
            str | None, typer.Option(help="Into this project (default: each one's own).")
        ] = None,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Validate every create, store nothing.")
        ] = False,
        api_url: ApiUrl = None,
        token: Token = None,
    ) -> None:
        """Create the load balancers of an export; those already there (by name) are skipped."""
        data = json.loads(path.read_text())
        if data.get("openha_export") != EXPORT_FORMAT:
            err.print(f"{path} is not an `openha export` file")
            raise typer.Exit(2)
        failed = 0
        with client(api_url, token) as api:
            for body in data["loadbalancers"]:
                body = {**body, "project_id": project or body.get("project_id")}
                label = f"{body['project_id']}/{body.get('name') or '(unnamed)'}"
                if body.get("name"):
                    same = checked(
                        api.get(
                            "/v2/lbaas/loadbalancers",
                            params={"name": body["name"], "project_id": body["project_id"]},
                        )
                    )
                    if same["loadbalancers"]:
                        typer.echo(f"skip    {label}: exists ({same['loadbalancers'][0]['id']})")
                        continue
                wrapped = {"loadbalancer": body}
                key = hashlib.sha256(json.dumps(wrapped, sort_keys=True).encode()).hexdigest()
                resp = api.post(
                    "/v2/lbaas/loadbalancers",
                    json=wrapped,
                    params={"dry_run": "true"} if dry_run else None,
                    headers={} if dry_run else {"Idempotency-Key": f"openha-import-{key}"},
                )
                if resp.status_code != 201:
                    failed += 1
                    typer.echo(f"FAIL    {label}: {resp.status_code} {resp.text[:300]}")
                    continue
                made = resp.json()["loadbalancer"]
                verb = "valid  " if dry_run else "created"
                typer.echo(f"{verb} {label}: {'(dry run)' if dry_run else made['id']}")
        if failed:
            raise typer.Exit(1)

    @app.command()
    def audit(
        project: Annotated[str | None, typer.Option(help="Writes by this project.")] = None,
        object_id: Annotated[str | None, typer.Option("--object", help="Touching this id.")] = None,
        method: Annotated[str | None, typer.Option(help="POST, PUT or DELETE.")] = None,
        status: Annotated[str | None, typer.Option(help="A code (404) or class (4xx).")] = None,
        since: Annotated[str | None, typer.Option(help="ISO 8601 (UTC).")] = None,
        limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
        api_url: ApiUrl = None,
        token: Token = None,
    ) -> None:
        """The latest writes through the API: who, what, when, how it ended."""
        params: dict[str, Any] = {"limit": limit, "sort": "id:desc"}
        for key, value in (
            ("project_id", project),
            ("object_id", object_id),
            ("method", method),
            ("status", status),
            ("since", since),
        ):
            if value is not None:
                params[key] = value
        with client(api_url, token) as api:
            records = checked(api.get("/v2/manage/audit", params=params))["audit_records"]
        for r in reversed(records):
            if as_json:
                typer.echo(json.dumps(r, separators=(",", ":")))
                continue
            who = f"{r['project_id'] or '-'}/{(r['user_id'] or '-')[:8]}"
            typer.echo(
                f"{r['created_at']} {r['status_code']} {r['method']:<6} {r['path']} "
                f"by {who} [{','.join(r['roles'])}]"
            )
