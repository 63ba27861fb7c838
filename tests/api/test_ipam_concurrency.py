"""Two address allocations racing on one subnet get two addresses (PostgreSQL).

`ipam.allocate` reads the taken addresses, then inserts: without a queue on the
subnet, a second transaction reads the same free address and its insert fails
on the unique (subnet, address) constraint when the first commits — a 409 at the
API, an internal error in the controller. SQLite serializes writers anyway.
"""

from __future__ import annotations

import threading

from sqlalchemy import select

from openha import ipam
from openha.db import make_engine, make_session_factory, transaction
from openha.models import Network, Port, Subnet


def test_racing_allocations_on_one_subnet_get_distinct_addresses(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    try:
        with transaction(sessions) as s:
            net = Network(project_id="p", name="race", physical_network="br")
            s.add(net)
            s.flush()
            sub = Subnet(
                project_id="p", network_id=net.id, cidr="203.0.113.0/24", gateway_ip="203.0.113.1"
            )
            s.add(sub)
            s.flush()
            subnet_id = sub.id
        first = sessions()
        taken = ipam.allocate(
            first,
            first.get(Subnet, subnet_id),  # type: ignore[arg-type]
            project_id="p",
            device_owner="test",
            device_id="one",
        )
        result: dict[str, object] = {}

        def second() -> None:
            try:
                with transaction(sessions) as s:
                    sub2 = s.get(Subnet, subnet_id)
                    assert sub2 is not None
                    port = ipam.allocate(
                        s, sub2, project_id="p", device_owner="test", device_id="two"
                    )
                    result["address"] = port.ip_address
            except Exception as exc:  # the failure this test exists for
                result["error"] = exc

        racer = threading.Thread(target=second)
        racer.start()
        racer.join(0.5)  # the second allocation is under way, waiting or not
        first.commit()
        first.close()
        racer.join(10)
        assert "error" not in result, f"the second allocation failed: {result.get('error')!r}"
        assert result["address"] != taken.ip_address
        with transaction(sessions) as s:
            addresses = list(s.scalars(select(Port.ip_address).where(Port.subnet_id == subnet_id)))
        assert sorted(addresses) == sorted([taken.ip_address, str(result["address"])])
    finally:
        engine.dispose()
