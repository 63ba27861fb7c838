"""Run the real Octavia API, and its controller worker, in one process for the conformance check.

Runs under Octavia's own virtualenv (`.venv-octavia`), never OpenHA's. Octavia's
`noop_driver` provider leaves every object in PENDING_* (it records calls and
answers nothing, octavia/api/drivers/noop_driver/driver.py), and Octavia then
refuses further changes with 409, so the reference here is the `amphora`
provider with the real controller worker and its taskflow flows, on Octavia's
no-op compute, network, amphora, volume and image drivers. The API casts to
the worker over oslo.messaging; with no message broker on this machine both
sides share one `fake://` transport, which only works inside one process:
octavia.common.rpc keeps a single TRANSPORT that the API's RPC client and the
worker's RPC server both use.

The database is SQLite, its tables created from Octavia's models and seeded
with the lookup rows, as Octavia's own functional tests do
(octavia/tests/functional/db/base.py): Octavia's Alembic migrations target
MySQL.

Usage: python octavia_server.py STATE_DIR PORT
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref import simple_server

CONFIG = """\
[DEFAULT]
transport_url = fake:/
debug = False
log_file = {state}/octavia.log

[api_settings]
auth_strategy = noauth
bind_host = 127.0.0.1
bind_port = {port}
enabled_provider_drivers = amphora:The Octavia Amphora driver.,noop_driver:The no-op driver.
default_provider_driver = amphora
healthcheck_enabled = False

[database]
connection = sqlite:///{state}/octavia.db

[controller_worker]
amphora_driver = amphora_noop_driver
compute_driver = compute_noop_driver
network_driver = network_noop_driver
volume_driver = volume_noop_driver
image_driver = image_noop_driver
loadbalancer_topology = SINGLE
amp_active_retries = 3
amp_active_wait_sec = 0
workers = 1
client_ca = {state}/ca.pem

[certificates]
cert_generator = local_cert_generator
cert_manager = noop_cert_manager
ca_certificate = {state}/ca.pem
ca_private_key = {state}/ca.key
server_certs_key_passphrase = insecure-key-do-not-use-this-key

[task_flow]
jobboard_enabled = False
engine = serial

[haproxy_amphora]
connection_max_retries = 1
connection_retry_interval = 0
build_rate_limit = -1

[health_manager]
heartbeat_key = insecure

[oslo_messaging]
topic = octavia_prov

[oslo_policy]
enforce_scope = False
enforce_new_defaults = False
"""


def write_ca(state: Path) -> None:
    """A throwaway CA: the amphora create flow signs an amphora certificate."""
    if (state / "ca.pem").exists():
        return
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=conformance-ca",
            "-keyout",
            str(state / "ca.key"),
            "-out",
            str(state / "ca.pem"),
        ],
        check=True,
        capture_output=True,
    )


def create_schema() -> None:
    """Tables from Octavia's models plus the lookup rows its foreign keys point to."""
    from octavia.common import constants
    from octavia.db import api as db_api
    from octavia.db import base_models, models

    base_models.BASE.metadata.create_all(db_api.get_engine())
    lookups = [
        (constants.SUPPORTED_PROVISIONING_STATUSES, models.ProvisioningStatus),
        (constants.SUPPORTED_HEALTH_MONITOR_TYPES, models.HealthMonitorType),
        (constants.SUPPORTED_LB_ALGORITHMS, models.Algorithm),
        (constants.SUPPORTED_PROTOCOLS, models.Protocol),
        (constants.SUPPORTED_OPERATING_STATUSES, models.OperatingStatus),
        (constants.SUPPORTED_SP_TYPES, models.SessionPersistenceType),
        (constants.SUPPORTED_AMPHORA_ROLES, models.AmphoraRoles),
        (constants.SUPPORTED_LB_TOPOLOGIES, models.LBTopology),
        (constants.SUPPORTED_VRRP_AUTH, models.VRRPAuthMethod),
        (constants.SUPPORTED_L7RULE_TYPES, models.L7RuleType),
        (constants.SUPPORTED_L7RULE_COMPARE_TYPES, models.L7RuleCompareType),
        (constants.SUPPORTED_L7POLICY_ACTIONS, models.L7PolicyAction),
        (constants.SUPPORTED_CLIENT_AUTH_MODES, models.ClientAuthenticationMode),
    ]
    session = db_api.get_session()
    with session.begin():
        if session.query(models.ProvisioningStatus).count():
            return
        for names, model in lookups:
            for name in names:
                session.add(model(name=name))
        # The placeholders deleted load balancers point at (Octavia's migrations add them).
        session.add(
            models.FlavorProfile(
                id=constants.NIL_UUID,
                name="DELETED-PLACEHOLDER",
                provider_name=constants.DELETED,
                flavor_data="{}",
            )
        )
        session.flush()
        session.add(
            models.Flavor(
                id=constants.NIL_UUID,
                flavor_profile_id=constants.NIL_UUID,
                name="DELETED-PLACEHOLDER",
                enabled=False,
                description="Placeholder for DELETED LBs with DELETED flavors",
            )
        )
        session.add(
            models.AvailabilityZoneProfile(
                id=constants.NIL_UUID,
                name="DELETED-PLACEHOLDER",
                provider_name=constants.DELETED,
                availability_zone_data="{}",
            )
        )
        session.flush()
        session.add(
            models.AvailabilityZone(
                availability_zone_profile_id=constants.NIL_UUID,
                name=constants.NIL_UUID,
                enabled=False,
                description="Placeholder for DELETED LBs with DELETED availability zones",
            )
        )


class ThreadingWSGIServer(ThreadingMixIn, simple_server.WSGIServer):
    daemon_threads = True


class QuietHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        logging.getLogger("octavia-conformance.http").debug(format, *args)


def main() -> None:
    state, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    state.mkdir(parents=True, exist_ok=True)
    write_ca(state)
    conf = state / "octavia.conf"
    conf.write_text(CONFIG.format(state=state, port=port))

    from octavia.api import app as api_app

    # Parses the configuration, sets up logging and the shared fake:// transport.
    app = api_app.setup_app(argv=["octavia-api", "--config-file", str(conf)])
    from oslo_config import cfg

    # SQLAlchemy 2 refuses pool_timeout with SQLite's NullPool (as in Octavia's tests).
    cfg.CONF.set_override("pool_timeout", None, group="database")
    create_schema()

    import oslo_messaging as messaging
    from octavia.common import constants, rpc
    from octavia.controller.queue.v2 import endpoints

    target = messaging.Target(topic=constants.TOPIC_AMPHORA_V2, server=cfg.CONF.host, fanout=False)
    worker = rpc.get_server(target, [endpoints.Endpoints()])
    worker.start()

    server = simple_server.make_server(
        "127.0.0.1", port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler
    )
    print(f"octavia listening on 127.0.0.1:{port}", flush=True)
    try:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        worker.stop()


if __name__ == "__main__":
    main()
