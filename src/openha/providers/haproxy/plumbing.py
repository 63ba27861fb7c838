"""How an instance's namespace joins its networks: bridges, VLANs, addresses."""

from __future__ import annotations

import ipaddress

from openha.domain.spec import InterfaceSpec, SubnetSpec


class UnsupportedNetwork(ValueError):
    pass


def bridge_for(subnet: SubnetSpec) -> tuple[str, bool, str | None, int | None]:
    """(bridge, managed, vlan_parent, vlan_id) for a subnet's network on every host.

    A flat network names its bridge in `provider:physical_network`; a VLAN network
    names the parent interface there and gets a bridge of its own, named after
    the network like Neutron's linuxbridge agent does (brq + 11 characters).
    """
    own_bridge = f"brq{subnet.network_id.replace('-', '')[:11]}"
    if subnet.network_type == "flat":
        return subnet.physical_network or own_bridge, subnet.bridge_managed, None, None
    if subnet.network_type == "vlan":
        if not subnet.physical_network or subnet.segmentation_id is None:
            raise UnsupportedNetwork(f"VLAN network {subnet.network_id} lacks a parent or id")
        return own_bridge, True, subnet.physical_network, subnet.segmentation_id
    raise UnsupportedNetwork(
        f"network type {subnet.network_type} of network {subnet.network_id} is not supported "
        "by the HAProxy provider's agents (flat and vlan are)"
    )


def interface(name: str, subnet: SubnetSpec, address: str, *, default_route: bool) -> InterfaceSpec:
    bridge, managed, parent, vlan = bridge_for(subnet)
    prefix = ipaddress.ip_network(subnet.cidr).prefixlen
    return InterfaceSpec(
        name=name,
        bridge=bridge,
        bridge_managed=managed,
        vlan_parent=parent,
        vlan_id=vlan,
        mtu=subnet.mtu,
        addresses=(f"{address}/{prefix}",),
        gateway=subnet.gateway_ip if default_route else None,
    )
