"""`openha events` and `openha webhook …`: the event log and webhooks, from a terminal.

They call the API (the one and the token `openha up` wrote to clouds.yaml, or
`--api-url` / `--token`): the operator's routes (`/v2/manage/…`) by default, a
project's own (`/v2/lbaas/…`) with `--tenant`. `webhook create` prints only the
generated secret on stdout (when it generated one), as `token create` does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from openha import clouds
from openha.settings import Settings

webhook_app = typer.Typer(help="Webhooks: events POSTed, signed, to a URL.", no_args_is_help=True)
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True)

ApiUrl = Annotated[
    str | None, typer.Option("--api-url", help="The OpenHA API. Default: the one in clouds.yaml.")
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="OS_TOKEN", help="A token. Default: clouds.yaml's.")
]
Tenant = Annotated[
    bool, typer.Option("--tenant", help="The token's project's own (/v2/lbaas), not all.")
]
AsJson = Annotated[bool, typer.Option("--json", help="JSON, one object per line.")]


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@contextmanager
def _api(api_url: str | None, token: str | None) -> Iterator[httpx.Client]:
    settings = Settings()
    url, secret = clouds.api_access(settings.state_dir, settings.api_bind, api_url, token)
    if not secret:
        raise _fail(clouds.NO_TOKEN, 2)
    with httpx.Client(
        base_url=url, headers={"X-Auth-Token": secret}, timeout=30, trust_env=False
    ) as client:
        try:
            yield client
        except httpx.HTTPError as exc:
            raise _fail(f"cannot reach {url}: {exc}") from None


def _ok(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        raise _fail(f"{resp.status_code}: {resp.text[:300]}")
    return resp.json() if resp.content else None


def _line(e: dict[str, Any]) -> str:
    what = e.get("resource_type") and f"{e['resource_type']}={e.get('resource_id')}"
    where = what or (e.get("load_balancer_id") and f"lb={e['load_balancer_id']}")
    where = where or (e.get("host_id") and f"host={e['host_id']}") or "-"
    return f"{e['created_at']} {e['severity']:<7} {e['kind']:<28} {where} {e['message']}"


def events(
    lb: Annotated[str | None, typer.Option("--lb", help="Only this load balancer's.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's.")] = None,
    host: Annotated[str | None, typer.Option(help="Only this host's (its id).")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="Repeatable: these kinds.")] = None,
    min_severity: Annotated[
        str | None, typer.Option("--min-severity", help="INFO, WARNING or ERROR and above.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 (UTC) or unix seconds.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 (UTC) or unix seconds.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The last N events.")] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print new events as they happen.")
    ] = False,
    tenant: Tenant = False,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """The event log: the last events matching the filters, oldest first."""
    path = "/v2/lbaas/events" if tenant else "/v2/manage/events"
    params: list[tuple[str, str]] = [("kind", k) for k in kind or []]
    for key, value in (
        ("load_balancer_id", lb),
        ("project_id", project),
        ("host_id", host),
        ("min_severity", min_severity),
        ("since", since),
        ("until", until),
    ):
        if value is not None:
            params.append((key, value))

    def show(event: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps(event, separators=(",", ":")))
        else:
            out.print(_line(event), markup=False)

    with _api(api_url, token) as api:
        page = _ok(api.get(path, params=[*params, ("sort", "id:desc"), ("limit", str(limit))]))
        shown = page["events"][::-1]
        for event in shown:
            show(event)
        if not follow:
            return
        cursor = [("marker", str(shown[-1]["id"]))] if shown else []
        query = httpx.QueryParams([*params, *cursor, ("follow", "true")])
        try:
            with api.stream("GET", path, params=query, timeout=None) as stream:
                if stream.status_code != 200:
                    stream.read()
                    raise _fail(f"{stream.status_code}: {stream.text[:300]}")
                for raw in stream.iter_lines():
                    if raw:
                        show(json.loads(raw))
        except KeyboardInterrupt:
            return


def _hooks(tenant: bool) -> str:
    return "/v2/lbaas/webhooks" if tenant else "/v2/manage/webhooks"


@webhook_app.command("list")
def webhook_list(
    tenant: Tenant = False, as_json: AsJson = False, api_url: ApiUrl = None, token: Token = None
) -> None:
    """Webhooks, with their state."""
    with _api(api_url, token) as api:
        hooks = _ok(api.get(_hooks(tenant)))["webhooks"]
    if as_json:
        for hook in hooks:
            typer.echo(json.dumps(hook, separators=(",", ":")))
        return
    table = Table("id", "name", "url", "kinds", "min", "project", "state")
    for h in hooks:
        state = "enabled" if h["enabled"] else f"disabled ({h['disabled_reason'] or 'by hand'})"
        scope = "all" if h["all_projects"] else h["project_id"]
        kinds = ",".join(h["kinds"]) or "*"
        table.add_row(h["id"], h["name"], h["url"], kinds, h["min_severity"], scope, state)
    out.print(table)


@webhook_app.command("create")
def webhook_create(
    url: Annotated[str, typer.Argument(help="Where to POST events (http or https).")],
    name: Annotated[str, typer.Option(help="A name.")] = "",
    kind: Annotated[
        list[str] | None, typer.Option(help="Repeatable: kinds (member.* …). Default: all.")
    ] = None,
    min_severity: Annotated[str, typer.Option("--min-severity")] = "INFO",
    lb: Annotated[str | None, typer.Option("--lb", help="Only this load balancer's.")] = None,
    secret: Annotated[
        str | None, typer.Option(help="The signing secret (16+ characters). Default: generated.")
    ] = None,
    tenant: Tenant = False,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """Subscribe URL to events; prints the generated secret (only it) on stdout."""
    body: dict[str, Any] = {"url": url, "name": name, "kinds": kind or []}
    body |= {"min_severity": min_severity, "load_balancer_id": lb}
    if secret is not None:
        body["secret"] = secret
    with _api(api_url, token) as api:
        hook = _ok(api.post(_hooks(tenant), json={"webhook": body}))["webhook"]
    err.print(f"webhook {hook['id']} created")
    if "secret" in hook:
        typer.echo(hook["secret"])


@webhook_app.command("set")
def webhook_set(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id.")],
    enable: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Deliver, or not.")
    ] = None,
    url: Annotated[str | None, typer.Option(help="A new URL.")] = None,
    secret: Annotated[str | None, typer.Option(help="A new signing secret.")] = None,
    tenant: Tenant = False,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """Enable (clearing its failures) or disable a webhook, or change its URL or secret."""
    body = {
        k: v for k, v in (("enabled", enable), ("url", url), ("secret", secret)) if v is not None
    }
    with _api(api_url, token) as api:
        _ok(api.put(f"{_hooks(tenant)}/{webhook_id}", json={"webhook": body}))


@webhook_app.command("delete")
def webhook_delete(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id.")],
    tenant: Tenant = False,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """Remove a webhook and what it had still to deliver."""
    with _api(api_url, token) as api:
        _ok(api.delete(f"{_hooks(tenant)}/{webhook_id}"))


@webhook_app.command("deliveries")
def webhook_deliveries(
    webhook_id: Annotated[str, typer.Argument(help="The webhook's id.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The last N.")] = 20,
    tenant: Tenant = False,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    token: Token = None,
) -> None:
    """The delivery log: each event sent (or to send), its attempts and last answer."""
    path = f"{_hooks(tenant)}/{webhook_id}/deliveries"
    with _api(api_url, token) as api:
        rows = _ok(api.get(path, params={"sort": "id:desc", "limit": limit}))["deliveries"][::-1]
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row, separators=(",", ":")))
        return
    table = Table("id", "event", "kind", "status", "tries", "answer", "last attempt")
    for d in rows:
        answer = d["last_error"] or (str(d["response_status"]) if d["response_status"] else "")
        table.add_row(
            str(d["id"]),
            str(d["event_id"]),
            d["event_kind"],
            d["status"],
            str(d["attempts"]),
            answer,
            d["last_attempt_at"] or "",
        )
    out.print(table)
