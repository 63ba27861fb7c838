"""Listener counters are defined once (domain) and every other place follows that definition."""

from __future__ import annotations

from openha.agent.haproxy import parse_show_stat
from openha.agent.protocol import InstanceStatus
from openha.domain.observed import COUNTER_FIELDS, ListenerCounters
from openha.models import ListenerStats


def test_the_stored_row_has_a_column_per_counter_and_nothing_else() -> None:
    columns = set(ListenerStats.__table__.columns.keys())
    assert columns - set(COUNTER_FIELDS) == {"listener_id", "load_balancer_id", "updated_at"}
    assert set(COUNTER_FIELDS) <= columns


def test_counters_add_up_field_by_field() -> None:
    one = ListenerCounters(bytes_in=1, bytes_out=2, active_connections=3, total_connections=4)
    two = ListenerCounters.model_validate({"bytes_in": "10", "request_errors": 5, "other": 1})
    assert (one + two).model_dump() == {
        "bytes_in": 11,
        "bytes_out": 2,
        "active_connections": 3,
        "total_connections": 4,
        "request_errors": 5,
    }


def test_the_agent_reports_the_same_type_on_the_wire() -> None:
    summary = parse_show_stat(
        "# pxname,svname,bin,bout,scur,stot,ereq,status\nl1,FRONTEND,5,6,1,9,2,OPEN\n"
    )
    status = InstanceStatus(instance_id="i", listeners=summary.listeners)
    wire = status.model_dump(mode="json")["listeners"]
    assert wire == {
        "l1": {
            "bytes_in": 5,
            "bytes_out": 6,
            "active_connections": 1,
            "total_connections": 9,
            "request_errors": 2,
        }
    }
    assert InstanceStatus.model_validate(status.model_dump()).listeners["l1"] == ListenerCounters(
        **wire["l1"]
    )
