"""The API application factory: wires settings, database, providers and every router."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import Session, sessionmaker

from openha import __version__, liveness
from openha.api import (
    agents,
    audit,
    bodies,
    dryrun,
    errors,
    idempotency,
    keymanager,
    metrics,
    openapi,
    versions,
)
from openha.api.auth.keystone import KeystoneAuth
from openha.api.policy import Policy
from openha.api.requestmetrics import RequestMetrics
from openha.db import make_engine, make_session_factory
from openha.providers.base import ProviderContext
from openha.providers.registry import ProviderRegistry
from openha.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Octavia's load balancing resources: served under /v2/lbaas and, as Octavia also
# mounts them (octavia/api/v2/controllers/__init__.py), straight under /v2.
LBAAS_MODULES = (
    "openha.api.tenant.loadbalancers",
    "openha.api.tenant.listeners",
    "openha.api.tenant.pools",
    "openha.api.tenant.members",
    "openha.api.tenant.healthmonitors",
    "openha.api.tenant.l7policies",
    "openha.api.tenant.l7rules",
    "openha.api.tenant.quotas",
    "openha.api.tenant.providers",
    "openha.api.tenant.catalogue",
    "openha.api.tenant.diagnostics",
    "openha.api.tenant.events",
    "openha.api.tenant.webhooks",
)
# Everything versioned is served under both /v2 and /v2.0, as Octavia does
# (python-octaviaclient uses /v2.0).
VERSIONED_MODULES = (
    "openha.api.networks",
    "openha.api.manage.amphorae",
)
# Served under /v2 only: operator and agent-facing routes.
MANAGE_MODULES: tuple[str, ...] = (
    "openha.api.manage.hosts",
    "openha.api.manage.events",
    "openha.api.manage.webhooks",
    "openha.api.manage.logs",
    "openha.api.manage.diagnostics",
    "openha.api.manage.prometheus",
    "openha.api.manage.operations",
    "openha.api.manage.migrations",
    "openha.api.manage.audit",
    "openha.api.manage.recovery",
)


def bind(app: FastAPI, settings: Settings, session_factory: sessionmaker[Session]) -> None:
    """Point `app` at its settings and database: everything a request reads from `app.state`.

    The routes never hold these themselves, so one app can be bound again to another
    database (the test suite does, rather than pay for building the routes per test).
    """
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.providers = ProviderRegistry(ProviderContext(settings, session_factory))
    app.state.policy = Policy(settings.policy_file)
    app.state.keystone = KeystoneAuth(settings) if settings.auth == "keystone" else None
    metrics.install(app, session_factory)


def create_app(
    settings: Settings | None = None,
    session_factory: sessionmaker[Session] | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    if session_factory is None:
        session_factory = make_session_factory(make_engine(settings.database_url))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Heartbeats reach the database through an API: while it beats, the controller
        # knows a silent host is silent, not unheard (`openha.liveness`).
        bound: Settings = app.state.settings
        beater = liveness.Beater(
            app.state.session_factory,
            liveness.KIND_API,
            interval=bound.service_beat_interval,
            dead_after=bound.service_dead_after,
        )
        await anyio.to_thread.run_sync(beater.start)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(beater.stop)

    app = FastAPI(
        title="OpenHA",
        version=__version__,
        description="Load balancers as a service: Octavia's v2 API on HAProxy.",
        redirect_slashes=False,
        lifespan=lifespan,
    )
    bind(app, settings, session_factory)
    errors.install(app)
    idempotency.install(app)
    app.add_middleware(bodies.UnicodeBodies)
    app.add_middleware(RequestMetrics)
    app.add_middleware(dryrun.DryRunAnswers)
    app.add_middleware(audit.AuditTrail)  # outermost: refused bodies are recorded too
    # First: every agent heartbeats every second, and a request is matched against the
    # routes in order (hundreds of Octavia routes, mounted under /v2 and /v2.0, took
    # half of an idle heartbeat's time in the API).
    app.include_router(agents.router, prefix="/v2", responses=openapi.ERRORS)
    app.include_router(versions.router)
    app.include_router(metrics.router)
    app.include_router(keymanager.router, responses=openapi.ERRORS)

    lbaas = APIRouter()
    for name in LBAAS_MODULES:
        lbaas.include_router(importlib.import_module(name).router)
    versioned = APIRouter()
    versioned.include_router(lbaas, prefix="/lbaas")
    versioned.include_router(lbaas, include_in_schema=False)
    for name in VERSIONED_MODULES:
        versioned.include_router(importlib.import_module(name).router)
    app.include_router(versioned, prefix="/v2", responses=openapi.ERRORS)
    app.include_router(versioned, prefix="/v2.0", include_in_schema=False)

    for name in MANAGE_MODULES:
        app.include_router(
            importlib.import_module(name).router, prefix="/v2", responses=openapi.ERRORS
        )
    for provider_name in app.state.providers.names:
        extra = app.state.providers.get(provider_name).operator_router()
        if extra is not None:
            app.include_router(
                extra,
                prefix=f"/v2/manage/providers/{provider_name}",
                responses=openapi.ERRORS,
            )
    return app
