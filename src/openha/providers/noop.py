"""The `noop` provider: applies instantly and touches nothing (API-only deployments, tests)."""

from __future__ import annotations

from openha.domain import constants as c
from openha.domain.observed import ObservedState
from openha.domain.spec import LoadBalancerSpec
from openha.providers.base import ApplyResult, Capability, Provider


class NoopProvider(Provider):
    name = "noop"
    description = "The no-op provider: accepts everything and runs no data plane."

    def flavor_capabilities(self) -> list[Capability]:
        return [Capability("loadbalancer_topology", "The load balancer topology (ignored).")]

    def availability_zone_capabilities(self) -> list[Capability]:
        return [Capability("compute_zone", "The zone hosts are taken from (ignored).")]

    def apply(self, spec: LoadBalancerSpec, *, failover_paused: str | None) -> ApplyResult:
        return ApplyResult.applied()

    def delete(self, load_balancer_id: str) -> bool:
        return True

    def observe(self, spec: LoadBalancerSpec) -> ObservedState:
        def up(enabled: bool) -> str:
            return c.ONLINE if enabled and spec.admin_state_up else c.OFFLINE

        state = ObservedState(load_balancer=up(True))
        for listener in spec.listeners:
            state.listeners[listener.id] = up(listener.admin_state_up)
            for policy in listener.l7policies:
                state.l7policies[policy.id] = up(policy.admin_state_up)
                for rule in policy.rules:
                    state.l7rules[rule.id] = up(rule.admin_state_up)
        # As a data plane would report them (`domain.status.derive`): a pool no listener
        # sends traffic to is never reported, so it stays OFFLINE, and so do the members
        # its monitor would check.
        used = {listener.default_pool_id for listener in spec.listeners} | {
            policy.redirect_pool_id for listener in spec.listeners for policy in listener.l7policies
        }
        for pool in spec.pools:
            live = pool.id in used
            state.pools[pool.id] = up(pool.admin_state_up) if live else c.OFFLINE
            hm = pool.health_monitor
            if hm is not None:
                state.health_monitors[hm.id] = up(hm.admin_state_up)
            for member in pool.members:
                if not member.admin_state_up:
                    state.members[member.id] = c.OFFLINE
                elif hm is None or not hm.admin_state_up:
                    state.members[member.id] = c.NO_MONITOR
                else:
                    state.members[member.id] = up(True) if live else c.OFFLINE
        return state
