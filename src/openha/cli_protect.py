"""`openha top|protect|relax`: an operator's view of who talks to a load balancer, and the lever.

`openha top LB` shows the busiest sources of the LB (`/v2/manage/loadbalancers/{id}/
top-talkers`: every instance's stick table, merged) and refreshes it live until
Ctrl-C (`--once` prints one table). `openha protect LB PROFILE` turns under-attack
mode on with that profile, `openha relax LB` turns it off. API URL and token as for
every operator command (`cli_ops.client`: `--api-url`/`--token`, else clouds.yaml).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from openha.cli_ops import ApiUrl, LbArg, Token, checked, client, lb_id_of
from openha.domain.protection import UNLIMITED

out = Console(highlight=False)


def talkers_table(answer: dict[str, Any], name: str) -> Table:
    """The top-talkers answer as a rich table (rates per the table's period)."""
    period = answer.get("rate_period", 10)
    table = Table(
        title=f"{name}: top talkers (rates per {period} s)",
        caption=_caption(answer),
    )
    for column in ("source", "requests", "connections/period", "open", "errors", "limited"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for row in answer.get("sources", []):
        table.add_row(
            str(row["source"]),
            str(row["request_rate"]),
            str(row["connection_rate"]),
            str(row["connections"]),
            str(row["error_rate"]),
            f"[red]yes ({row['limited_rate']})[/red]" if row["limited"] else "no",
        )
    return table


def _caption(answer: dict[str, Any]) -> str:
    parts = [
        f"{i['instance_id'][:8]}: {i['tracked']} tracked"
        + ("" if i["protected"] else " (no protection profile)")
        + _limits(i.get("limits") or {})
        for i in answer.get("instances", [])
    ]
    parts += [f"{k[:8]}: {v}" for k, v in answer.get("errors", {}).items()]
    return "; ".join(parts)


def _limits(limits: dict[str, int]) -> str:
    """The request and connection limits in force, as the caption says them."""
    shown = [
        f"{label} {limits[key]}"
        for key, label in (("req_rate", "req"), ("conn_rate", "conn"), ("conn_cur", "open"))
        if key in limits and limits[key] < UNLIMITED
    ]
    return f", limits {' '.join(shown)}" if shown else ""


def register(app: typer.Typer) -> None:
    @app.command()
    def top(
        lb: LbArg,
        limit: Annotated[int, typer.Option(help="How many sources.")] = 20,
        interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
        once: Annotated[bool, typer.Option(help="Print once and exit.")] = False,
        api_url: ApiUrl = None,
        token: Token = None,
    ) -> None:
        """The busiest sources of a load balancer, refreshed live (Ctrl-C to stop)."""
        with client(api_url, token) as api:
            lb_id = lb_id_of(api, lb)
            path = f"/v2/manage/loadbalancers/{lb_id}/top-talkers"

            def fetch() -> Table:
                return talkers_table(checked(api.get(path, params={"limit": limit})), lb)

            if once:
                out.print(fetch())
                return
            with Live(fetch(), console=out, refresh_per_second=4) as live:
                try:
                    while True:
                        time.sleep(max(0.2, interval))
                        live.update(fetch())
                except KeyboardInterrupt:
                    pass

    @app.command()
    def protect(
        lb: LbArg,
        profile: Annotated[str, typer.Argument(help="The under-attack profile's name or id.")],
        api_url: ApiUrl = None,
        token: Token = None,
    ) -> None:
        """Under-attack mode: the profile's limits and lists apply at once, no reload."""
        with client(api_url, token) as api:
            lb_id = lb_id_of(api, lb)
            body = {"profile": profile}
            answer = checked(api.post(f"/v2/manage/loadbalancers/{lb_id}/protect", json=body), 202)
            applied = answer["protection"]["under_attack_profile"]["name"]
            out.print(f"{lb}: under attack, profile {applied}")

    @app.command()
    def relax(lb: LbArg, api_url: ApiUrl = None, token: Token = None) -> None:
        """Leave under-attack mode: the load balancer's own profile applies again."""
        with client(api_url, token) as api:
            lb_id = lb_id_of(api, lb)
            checked(api.delete(f"/v2/manage/loadbalancers/{lb_id}/protect"))
            out.print(f"{lb}: under-attack mode off")
