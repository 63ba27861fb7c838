"""OpenHA: load balancers as a service on HAProxy and keepalived, with Octavia's v2 API.

Dependencies point down. The layers, top to bottom (names under `openha.`):

    entry points: cli, cli_alerts, cli_ops, allinone, demo, clouds, lab, diagnose,
        keystone_register, opsclient
    api: api
    controller: controller
    providers: providers
    data plane: agent, render
    neutral: db, settings, events, credentials, ipam, hosts, liveness, certstore
    models: models
    domain: domain

A module may import any module of its own layer or of a layer below it, never
one above, and imports form no circle. A lower layer that has something to say
to a higher one raises its own error or returns a value (ipam's AddressError
becomes an HTTP answer in `api.errors`; the controller hands its failover
verdict to a provider's `apply`). Every import counts, at module level or inside
a function; one under `if TYPE_CHECKING:` obeys the layers too (a type that a
lower layer needs from a higher one lives in the wrong place) but cannot close a
circle, as it never runs. This package's own `__init__` sits with the domain.
`tests/unit/test_layering.py` reads this table and holds the code to it.
"""

__version__ = "0.1.0"
