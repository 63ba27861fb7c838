"""The `openha` command: runs the services (api, controller, agent, the all-in-one `up`)
and does the few operator chores that need no API (tokens, host enrolment, purge).

Commands that print a secret (`token create`, `host enroll`) print only that
secret on stdout, so scripts can capture it; everything else goes to stderr.
Settings come from `openha.settings.Settings` (OPENHA_* variables, TOML file).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

# `openha.db` (alembic) is imported by the commands that use it: the agent needs
# none of it and starts sooner.
from openha import cli_alerts, cli_ops, cli_protect
from openha.domain.constants import ROLES
from openha.settings import Settings

app = typer.Typer(
    help="OpenHA: load balancers as a service, Octavia's API on HAProxy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
# The API and the token of commands that call it; both default to <state_dir>/clouds.yaml.
ApiUrlOption = Annotated[
    str | None,
    typer.Option("--api-url", help="The OpenHA API. Default: the one in clouds.yaml."),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", envvar="OS_TOKEN", help="A token. Default: clouds.yaml's."),
]

token_app = typer.Typer(help="API tokens (Keystone stand-ins).", no_args_is_help=True)
host_app = typer.Typer(help="Agent hosts.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(host_app, name="host")
# The event log and webhooks (issue 10): their commands live in their own module.
app.command()(cli_alerts.events)
app.add_typer(cli_alerts.webhook_app, name="webhook")
keystone_app = typer.Typer(help="Keystone (auth = keystone).", no_args_is_help=True)
app.add_typer(keystone_app, name="keystone")
certstore_app = typer.Typer(help="The embedded certificate store.", no_args_is_help=True)
app.add_typer(certstore_app, name="certstore")

err_console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("openha.cli")
LOG_LEVELS = ("debug", "info", "warning", "error")
PR_SET_PDEATHSIG = 1


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is now (test runners swap it between invocations)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(level: str) -> None:
    if sys.stderr.isatty():
        handler: logging.Handler = RichHandler(
            console=err_console, show_path=False, rich_tracebacks=True
        )
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        # Plain lines when piped (e.g. relayed by `openha up` or captured by systemd).
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Alembic narrates every migration check at INFO; only its problems matter here.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs every request at INFO: heartbeats and readiness probes would drown the rest.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def watch_parent() -> None:
    """Under `openha up`, die with the supervisor even if it is SIGKILLed."""
    parent = os.environ.get("OPENHA_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The supervisor may have died before prctl took effect.
    if os.getppid() != int(parent):
        raise SystemExit(1)


def _settings() -> Settings:
    # Not the cached get_settings(): each invocation reads the environment afresh.
    return Settings()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


@app.callback()
def main(
    log_level: Annotated[
        str,
        typer.Option(envvar="OPENHA_LOG_LEVEL", help=f"One of {', '.join(LOG_LEVELS)}."),
    ] = "info",
) -> None:
    if log_level.lower() not in LOG_LEVELS:
        raise _fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}", 2)
    setup_logging(log_level)
    watch_parent()


# --- services -------------------------------------------------------------------------


@app.command()
def api() -> None:
    """Run the API server (Octavia v2, networks, operator API) on settings.api_bind."""
    import gc

    import uvicorn

    from openha import db
    from openha.api.app import create_app

    settings = _settings()
    db.upgrade_schema(settings)
    host, port = settings.api_host_port
    application = create_app(settings)
    # Everything loaded so far (modules, schemas, mappers) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it, and a list of
    # a thousand load balancers (thousands of new objects) no longer triggers
    # collections that cost as much as the list itself.
    gc.collect()
    gc.freeze()
    log.info("API listening on %s:%d", host, port)
    uvicorn.run(
        application,
        host=host,
        port=port,
        # Keep our logging setup instead of uvicorn's own.
        log_config=None,
        # One line per request (agents heartbeat every second) only when debugging.
        access_log=logging.getLogger().level <= logging.DEBUG,
        server_header=False,
    )


@app.command()
def controller() -> None:
    """Run the reconcile loop until SIGTERM or Ctrl-C."""
    from openha import db
    from openha.controller.reconciler import Reconciler
    from openha.providers.base import ProviderContext
    from openha.providers.registry import ProviderRegistry

    settings = _settings()
    db.upgrade_schema(settings)
    sessions = db.make_session_factory(db.make_engine(settings.database_url))
    registry = ProviderRegistry(ProviderContext(settings, sessions))
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("controller stopping (%s)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    Reconciler(settings, sessions, registry).run(stop)


@app.command()
def agent() -> None:
    """Run the host agent (root): namespaces, HAProxy, keepalived, heartbeats."""
    try:
        from openha.agent.server import run_agent
    except ImportError as exc:
        raise _fail(f"the agent is not available in this installation: {exc}") from None
    run_agent(_settings())


@app.command()
def purge(
    everything: Annotated[
        bool,
        typer.Option(
            "--everything",
            help="Also the agent directory and every OpenHA namespace, veth and bridge.",
        ),
    ] = False,
) -> None:
    """Remove this agent's namespaces, HAProxy and keepalived processes (and, with
    --everything, its directory and every OpenHA namespace and link on the host)."""
    try:
        from openha.agent.purge import purge as purge_agent
    except ImportError as exc:
        raise _fail(f"purge is not available in this installation: {exc}") from None
    settings = _settings()
    assert settings.agent_dir is not None
    removed = purge_agent(settings.agent_dir, everything, settings.agent_keys_dir)
    err_console.print(
        f"removed {len(removed)} namespace(s){': ' if removed else ''}" + ", ".join(removed)
    )


@app.command()
def up(
    no_agent: Annotated[
        bool,
        typer.Option("--no-agent", help="Do not enrol this host nor run a local agent."),
    ] = False,
) -> None:
    """All-in-one: API, controller and (as root) a local agent, supervised. Ctrl-C stops."""
    from openha import allinone

    level = logging.getLevelName(logging.getLogger().level).lower()
    raise typer.Exit(allinone.run(_settings(), log_level=level, with_agent=not no_agent))


def _api_access(settings: Settings, api_url: str | None, token: str | None) -> tuple[str, str]:
    """The API's URL and a token: the options', else those `openha up` wrote to clouds.yaml."""
    from openha import clouds

    url, secret = clouds.api_access(settings.state_dir, settings.api_bind, api_url, token)
    if not secret:
        raise _fail(
            f"no token: give --token (or OS_TOKEN), or start `openha up` first "
            f"(it writes {settings.state_dir / clouds.FILE_NAME})",
            2,
        )
    return url, secret


@app.command()
def demo(
    clean: Annotated[
        bool, typer.Option("--clean", help="Remove the demo: exactly what demo.json records.")
    ] = False,
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
    prefix: Annotated[
        str, typer.Option(help="Names of the demo's bridge and namespaces start with this.")
    ] = "ohdemo",
) -> None:
    """A load balancer to curl from this host: three web servers behind HTTP :80 (root).

    Needs a running OpenHA (`openha up`); reads the admin token from
    <state_dir>/clouds.yaml. `--clean` removes everything the demo made.
    """
    from openha import demo as demo_module

    settings = _settings()
    url, secret = _api_access(settings, api_url, token)
    console = Console()
    try:
        if clean:
            demo_module.clean_demo(settings.state_dir, url, secret, console)
        else:
            demo_module.run_demo(settings.state_dir, url, secret, prefix=prefix, console=console)
    except demo_module.DemoError as exc:
        raise _fail(str(exc)) from None


def _render_line(record: dict[str, Any]) -> str:
    """One log record as a person reads it (`--json` prints the record itself)."""
    from datetime import UTC, datetime

    ts = record.get("ts")
    when = (
        datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if isinstance(ts, int | float)
        else "?"
    )
    host = record.get("host", "-")
    if record.get("kind") == "admin":
        return f"{when} {host} {record.get('severity', '-')}: {record.get('message', '')}"
    who = f"{record.get('client', '-')}:{record.get('client_port', '-')}"
    member = str(record.get("member", "-"))[:8]
    if "status" in record:
        what = (
            f"{record.get('method', '-')} {record.get('path', '-')} {record.get('status')} "
            f"{record.get('bytes_out', 0)}B {record.get('ta', '-')}ms"
        )
    else:
        what = f"TCP {record.get('bytes_in', 0)}/{record.get('bytes_out', 0)}B {record.get('tt')}ms"
    return f"{when} {host} {who} {what} member={member} {record.get('termination', '')}".rstrip()


@app.command()
def logs(
    lb: Annotated[str, typer.Argument(help="The load balancer: its id or its name.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing lines as they come.")
    ] = False,
    status: Annotated[
        str | None, typer.Option(help="Only this HTTP status (503) or class (5xx).")
    ] = None,
    client: Annotated[str | None, typer.Option(help="Only this client address or CIDR.")] = None,
    kind: Annotated[str, typer.Option(help="access (requests) or admin (events).")] = "access",
    since: Annotated[
        str | None, typer.Option(help="Unix time or ISO 8601 with a zone (…Z).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="The last N lines.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """A load balancer's access (or admin) log lines, both halves of a pair merged."""
    import json
    import uuid

    import httpx

    url, secret = _api_access(_settings(), api_url, token)
    params: dict[str, Any] = {"kind": kind, "limit": limit}
    for key, value in (("status", status), ("client", client), ("since", since)):
        if value is not None:
            params[key] = value
    out = Console(soft_wrap=True, highlight=False)
    with httpx.Client(
        base_url=url, headers={"X-Auth-Token": secret}, timeout=30, trust_env=False
    ) as api:
        try:
            lb_id = str(uuid.UUID(lb))
        except ValueError:
            named = api.get("/v2/lbaas/loadbalancers", params={"name": lb})
            matches = named.json().get("loadbalancers", []) if named.status_code == 200 else []
            if len(matches) != 1:
                raise _fail(f"{len(matches)} load balancers are named {lb!r}", 1) from None
            lb_id = matches[0]["id"]
        path = f"/v2/lbaas/loadbalancers/{lb_id}/logs"

        def show(record: dict[str, Any]) -> None:
            if as_json:
                typer.echo(json.dumps(record, separators=(",", ":")))
            else:
                out.print(_render_line(record), markup=False)

        try:
            if not follow:
                resp = api.get(path, params=params)
                if resp.status_code != 200:
                    raise _fail(f"{resp.status_code}: {resp.text[:300]}", 1)
                for record in resp.json()["logs"]:
                    show(record)
                for host in resp.json().get("unreachable_hosts", []):
                    err_console.print(f"host {host} did not answer: its lines are missing")
                return
            with api.stream(
                "GET", path, params={**params, "follow": "true"}, timeout=None
            ) as stream:
                if stream.status_code != 200:
                    stream.read()
                    raise _fail(f"{stream.status_code}: {stream.text[:300]}", 1)
                for raw in stream.iter_lines():
                    if raw:
                        show(json.loads(raw))
        except httpx.HTTPError as exc:
            raise _fail(f"cannot reach {url}: {exc}", 1) from None
        except KeyboardInterrupt:
            return


@app.command()
def diagnose(
    lb: Annotated[str, typer.Argument(help="The load balancer: its id or its name.")],
    probe: Annotated[bool, typer.Option("--probe", help="Also probe every member now.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's answer.")] = False,
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Why a load balancer misbehaves: processes, HAProxy's view, config, plumbing, probe."""
    import json

    import httpx

    from openha import diagnose as view

    url, secret = _api_access(_settings(), api_url, token)
    auth = {"X-Auth-Token": secret}
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=30, trust_env=False) as api:
            diag = view.fetch(api, lb, probe)
    except (httpx.HTTPError, view.DiagnoseError) as exc:
        raise _fail(str(exc), 1) from None
    if as_json:
        typer.echo(json.dumps(diag, indent=1))
    else:
        view.render(diag, Console(soft_wrap=False, highlight=False))


# --- operations: migrate, drain, undrain, follow -------------------------------------

Wait = Annotated[bool, typer.Option("--wait", help="Follow the operation until it is over.")]


def _operate(api_url: str | None, token: str | None, wait: bool, start: Any) -> None:
    """Run `start(api)` (an action answering an operation), then show or follow it."""
    from openha import opsclient

    out = Console(soft_wrap=True, highlight=False)
    try:
        with opsclient.connect(_settings(), api_url, token) as api:
            op = start(api)
            if wait:
                op = opsclient.follow(api, op["id"], out)
            opsclient.show(op, out)
    except opsclient.OpsError as exc:
        raise _fail(str(exc)) from None
    if op["state"] == "FAILED":
        raise typer.Exit(1)


@app.command()
def migrate(
    lb: Annotated[str, typer.Argument(help="The load balancer: its id or its name.")],
    host: Annotated[str | None, typer.Option("--host", help="Target host (id or name).")] = None,
    az: Annotated[str | None, typer.Option("--az", help="Or: any host of this zone.")] = None,
    wait: Wait = False,
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Move a load balancer to another host, make-before-break (no request lost)."""
    from openha import opsclient

    if (host is None) == (az is None):
        raise _fail("give --host or --az", 2)
    _operate(api_url, token, wait, lambda api: opsclient.migrate(api, lb, host, az))


@app.command()
def drain(
    host: Annotated[str, typer.Argument(help="The host: its id or its name.")],
    wait: Wait = False,
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Move every load balancer off a host, a few at a time; it ends DRAINED."""
    from openha import opsclient

    _operate(
        api_url, token, wait, lambda api: opsclient.host_action(api, host, "drain")["operation"]
    )


@app.command()
def undrain(
    host: Annotated[str, typer.Argument(help="The host: its id or its name.")],
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Give a drained (or draining) host back to the scheduler."""
    from openha import opsclient

    try:
        with opsclient.connect(_settings(), api_url, token) as api:
            found = opsclient.host_action(api, host, "undrain")["host"]
    except opsclient.OpsError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"{found['name']}: {found['admin_state']}")


@app.command()
def operation(
    op_id: Annotated[str, typer.Argument(help="The operation's id.")],
    wait: Wait = False,
    api_url: ApiUrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show an operation (its steps, progress, error); --wait follows it to the end."""
    from openha import opsclient

    _operate(api_url, token, wait, lambda api: opsclient.operation(api, op_id))


# --- chores ---------------------------------------------------------------------------


def _sessions(settings: Settings) -> Any:
    from openha import db

    db.upgrade_schema(settings)
    return db.make_session_factory(db.make_engine(settings.database_url))


@token_app.command("create")
def token_create(
    project: Annotated[str, typer.Option("--project", help="The project the token acts for.")],
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help=f"Repeatable: {', '.join(ROLES)}. Default: member."),
    ] = None,
    description: Annotated[str, typer.Option(help="Why this token exists.")] = "",
) -> None:
    """Create an API token and print it (only it) on stdout; it is shown once."""
    from openha import db
    from openha.credentials import create_token

    roles = list(dict.fromkeys(role or ["member"]))
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise _fail(f"unknown role(s) {', '.join(unknown)}; use {', '.join(ROLES)}", 2)
    if not project.strip():
        raise _fail("--project must not be empty", 2)
    with db.transaction(_sessions(_settings())) as session:
        secret = create_token(session, project, roles, description)
    typer.echo(secret)


@host_app.command("enroll")
def host_enroll(
    name: Annotated[str, typer.Argument(help="The host's name, as its agent reports it.")],
    az: Annotated[str, typer.Option("--az", help="Availability zone.")] = "",
    capacity: Annotated[
        int | None,
        typer.Option(min=0, help="Instances the host may run (default: what its resources allow)."),
    ] = None,
) -> None:
    """Enrol (or re-key) a host and print its agent credential (only it) on stdout."""
    from openha import db, hosts

    with db.transaction(_sessions(_settings())) as session:
        secret = hosts.enroll(session, name, availability_zone=az, capacity=capacity)
    typer.echo(secret)


@keystone_app.command("register")
def keystone_register(
    endpoint: Annotated[str, typer.Option(help="OpenHA's URL in the catalogue.")],
    auth_url: Annotated[str, typer.Option(envvar="OS_AUTH_URL", help="Keystone's URL.")],
    admin_username: Annotated[str, typer.Option(envvar="OS_USERNAME")] = "admin",
    admin_password: Annotated[str, typer.Option(envvar="OS_PASSWORD")] = "",
    admin_project: Annotated[str, typer.Option(envvar="OS_PROJECT_NAME")] = "admin",
    region: Annotated[str, typer.Option(envvar="OS_REGION_NAME")] = "RegionOne",
    network: Annotated[
        bool, typer.Option(help="Also the cloud's `network` service (clouds without Neutron).")
    ] = False,
    key_manager: Annotated[
        bool,
        typer.Option(help="Also the cloud's `key-manager` service (clouds without Barbican)."),
    ] = False,
) -> None:
    """Create the `load-balancer` service, its endpoints, Octavia's roles and the
    service user of `OPENHA_KEYSTONE_USERNAME` / `OPENHA_KEYSTONE_PASSWORD`."""
    from openha.keystone_register import Registration, register

    settings = _settings()
    if not settings.keystone_password:
        raise _fail("set OPENHA_KEYSTONE_PASSWORD (the service user's password)", 2)
    made = register(
        Registration(
            auth_url=auth_url,
            admin_username=admin_username,
            admin_password=admin_password,
            admin_project_name=admin_project,
            endpoint=endpoint,
            region=region,
            service_username=settings.keystone_username,
            service_password=settings.keystone_password,
            service_project_name=settings.keystone_project_name,
            network=network,
            key_manager=key_manager,
        )
    )
    for key, value in made.items():
        typer.echo(f"{key}: {value}")


# Operators' repairs and backups (sync, reload, recover, diff, export, import, audit).
cli_ops.register(app)
cli_protect.register(app)

if __name__ == "__main__":
    app()


@certstore_app.command("reseal")
def certstore_reseal() -> None:
    """Seal every stored payload again with the first of `certstore_keys` (key rotation:
    put the new key first, run this, then drop the old key)."""
    from openha import db
    from openha.certstore.sealing import Sealer, SealError
    from openha.certstore.store import reseal_all

    settings = _settings()
    try:
        with db.transaction(_sessions(settings)) as session:
            count = reseal_all(session, Sealer.from_settings(settings))
    except (SealError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"resealed {count} payloads")
