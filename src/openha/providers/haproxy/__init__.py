"""The `haproxy` provider: each load balancer as HAProxy in network namespaces on agent hosts.

SINGLE places one STANDALONE instance; ACTIVE_STANDBY (flavor key
`loadbalancer_topology`) places a MASTER and a BACKUP on two hosts. By job:
- `placement`: the pure planner (which host runs each instance) and its vocabulary;
- `allocation`: commits a plan (Instance rows, addresses, VRRP router ids, events);
- `instance_spec`: pure, LoadBalancerSpec + placements -> each instance's InstanceSpec;
- `plumbing`: how an instance's namespace joins its networks;
- `agent_client`: the HTTP calls to agents;
- `driver`: the `Provider` the controller calls (apply, delete, failover, observe).
"""
