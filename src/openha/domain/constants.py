"""The vocabulary: Octavia's allowed values, defaults and limits, as its v2 API defines
them, and OpenHA's own status words for hosts and instances."""

from __future__ import annotations

from typing import Final

# Provisioning and operating statuses
ACTIVE: Final = "ACTIVE"
DELETED: Final = "DELETED"
ERROR: Final = "ERROR"
PENDING_CREATE: Final = "PENDING_CREATE"
PENDING_UPDATE: Final = "PENDING_UPDATE"
PENDING_DELETE: Final = "PENDING_DELETE"
PENDING_STATUSES: Final = (PENDING_CREATE, PENDING_UPDATE, PENDING_DELETE)

ONLINE: Final = "ONLINE"
OFFLINE: Final = "OFFLINE"
DEGRADED: Final = "DEGRADED"
DRAINING: Final = "DRAINING"
NO_MONITOR: Final = "NO_MONITOR"
OPERATING_STATUSES: Final = (ONLINE, OFFLINE, DEGRADED, ERROR, DRAINING, NO_MONITOR)

# Listeners and pools
LISTENER_PROTOCOLS: Final = (
    "HTTP",
    "HTTPS",
    "TCP",
    "TERMINATED_HTTPS",
    "UDP",
    "SCTP",
    "PROMETHEUS",
)
POOL_PROTOCOLS: Final = ("HTTP", "HTTPS", "TCP", "PROXY", "PROXYV2", "UDP", "SCTP")
LISTENER_POOL_PROTOCOL_MAP: Final[dict[str, tuple[str, ...]]] = {
    "HTTP": ("HTTP", "PROXY", "PROXYV2"),
    "HTTPS": ("HTTPS", "PROXY", "PROXYV2", "TCP"),
    "TCP": ("TCP", "HTTP", "HTTPS", "PROXY", "PROXYV2"),
    "TERMINATED_HTTPS": ("HTTP", "PROXY", "PROXYV2"),
    "UDP": ("UDP",),
    "SCTP": ("SCTP",),
    "PROMETHEUS": (),
}
# Protocols Octavia serves with LVS rather than HAProxy: no TLS, headers or HTTP checks.
LVS_PROTOCOLS: Final = ("UDP", "SCTP")
LB_ALGORITHMS: Final = ("ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT")
SESSION_PERSISTENCE_TYPES: Final = ("SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE")

INSERT_HEADERS: Final = (
    "X-Forwarded-For",
    "X-Forwarded-Port",
    "X-Forwarded-Proto",
    "X-SSL-Client-Verify",
    "X-SSL-Client-Has-Cert",
    "X-SSL-Client-DN",
    "X-SSL-Client-CN",
    "X-SSL-Issuer",
    "X-SSL-Client-SHA1",
    "X-SSL-Client-Not-Before",
    "X-SSL-Client-Not-After",
)
CLIENT_AUTHENTICATION_MODES: Final = ("NONE", "OPTIONAL", "MANDATORY")
TLS_VERSIONS: Final = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

DEFAULT_TIMEOUT_CLIENT_DATA: Final = 50000
DEFAULT_TIMEOUT_MEMBER_CONNECT: Final = 5000
DEFAULT_TIMEOUT_MEMBER_DATA: Final = 50000
DEFAULT_TIMEOUT_TCP_INSPECT: Final = 0
MAX_TIMEOUT: Final = 24 * 60 * 60 * 1000  # 24 days in ms, Octavia's upper bound
# What an integer column holds: Integer (32-bit on PostgreSQL) and BigInteger. A body's
# integer without a tighter bound of Octavia's is bounded by its column.
MAX_INT32: Final = 2**31 - 1
MAX_INT64: Final = 2**63 - 1
MIN_PORT: Final = 1
MAX_PORT: Final = 65535
MIN_WEIGHT: Final = 0
MAX_WEIGHT: Final = 256

# Health monitors
HEALTH_MONITOR_TYPES: Final = ("HTTP", "HTTPS", "PING", "TCP", "TLS-HELLO", "UDP-CONNECT", "SCTP")
HTTP_METHODS: Final = (
    "CONNECT",
    "DELETE",
    "GET",
    "HEAD",
    "OPTIONS",
    "PATCH",
    "POST",
    "PUT",
    "TRACE",
)
HTTP_VERSIONS: Final = (1.0, 1.1)
MIN_HM_RETRIES: Final = 1
MAX_HM_RETRIES: Final = 10
DEFAULT_HTTP_METHOD: Final = "GET"
DEFAULT_URL_PATH: Final = "/"
DEFAULT_EXPECTED_CODES: Final = "200"
DEFAULT_MAX_RETRIES_DOWN: Final = 3

# L7
L7POLICY_ACTIONS: Final = ("REJECT", "REDIRECT_TO_URL", "REDIRECT_TO_POOL", "REDIRECT_PREFIX")
L7RULE_TYPES: Final = (
    "HOST_NAME",
    "PATH",
    "FILE_TYPE",
    "HEADER",
    "COOKIE",
    "SSL_CONN_HAS_CERT",
    "SSL_VERIFY_RESULT",
    "SSL_DN_FIELD",
)
L7RULE_COMPARE_TYPES: Final = ("REGEX", "STARTS_WITH", "ENDS_WITH", "CONTAINS", "EQUAL_TO")
REDIRECT_HTTP_CODES: Final = (301, 302, 303, 307, 308)
DEFAULT_REDIRECT_HTTP_CODE: Final = 302
MAX_L7RULES_PER_POLICY: Final = 50

# Topologies (flavor profile key "loadbalancer_topology")
TOPOLOGY_SINGLE: Final = "SINGLE"
TOPOLOGY_ACTIVE_STANDBY: Final = "ACTIVE_STANDBY"
ROLE_STANDALONE: Final = "STANDALONE"
ROLE_MASTER: Final = "MASTER"
ROLE_BACKUP: Final = "BACKUP"

# Agent hosts: `Host.status` (set by registration, heartbeats and the host monitor)
# and `Host.admin_state` (set by an operator).
HOST_ENROLLED: Final = "ENROLLED"  # has a credential; its agent never registered
HOST_UP: Final = "UP"
HOST_DOWN: Final = "DOWN"
HOST_STATUSES: Final = (HOST_ENROLLED, HOST_UP, HOST_DOWN)
HOST_ENABLED: Final = "ENABLED"
HOST_DISABLED: Final = "DISABLED"  # serves what it has, gets nothing new
HOST_ADMIN_STATES: Final = (HOST_ENABLED, HOST_DISABLED)
# Set by a drain operation (not by PUT): its LBs move away, then it is empty.
HOST_DRAINING: Final = "DRAINING"
HOST_DRAINED: Final = "DRAINED"

# Admin operations (`Operation.state`) and what an instance is doing in a migration.
OPERATION_PENDING: Final = "PENDING"
OPERATION_RUNNING: Final = "RUNNING"
OPERATION_SUCCEEDED: Final = "SUCCEEDED"
OPERATION_FAILED: Final = "FAILED"
OPERATION_STATES: Final = (
    OPERATION_PENDING,
    OPERATION_RUNNING,
    OPERATION_SUCCEEDED,
    OPERATION_FAILED,
)
OPERATION_OPEN: Final = (OPERATION_PENDING, OPERATION_RUNNING)
MIGRATION_STAGED: Final = "STAGED"  # built on its new host, not serving yet
MIGRATION_RETIRING: Final = "RETIRING"  # gave its VIP away, draining, then removed

# Instances: `Instance.status`, as the controller last saw the instance.
INSTANCE_ALLOCATED: Final = "ALLOCATED"  # placed, nothing applied yet
INSTANCE_ACTIVE: Final = "ACTIVE"  # its agent applied a configuration
INSTANCE_ERROR: Final = "ERROR"  # its agent refused or could not be reached
INSTANCE_PENDING_FAILOVER: Final = "PENDING_FAILOVER"  # shown until the rebuild
INSTANCE_STATUSES: Final = (
    INSTANCE_ALLOCATED,
    INSTANCE_ACTIVE,
    INSTANCE_ERROR,
    INSTANCE_PENDING_FAILOVER,
)

# Event severities (`Event.severity`)
SEVERITY_INFO: Final = "INFO"
SEVERITY_WARNING: Final = "WARNING"
SEVERITY_ERROR: Final = "ERROR"
SEVERITIES: Final = (SEVERITY_INFO, SEVERITY_WARNING, SEVERITY_ERROR)

# Webhook deliveries (the outbox)
DELIVERY_PENDING: Final = "PENDING"  # due, or waiting for its next attempt
DELIVERY_DELIVERED: Final = "DELIVERED"
DELIVERY_FAILED: Final = "FAILED"  # gave up after the last attempt

# API roles
ROLE_ADMIN: Final = "admin"
ROLE_MEMBER: Final = "member"
ROLE_READER: Final = "reader"
# Octavia's advanced RBAC roles, honoured beside the three above (`openha.api.policy`).
OCTAVIA_ROLES: Final = (
    "load-balancer_admin",
    "load-balancer_member",
    "load-balancer_observer",
    "load-balancer_global_observer",
    "load-balancer_quota_admin",
)
ROLES: Final = (ROLE_ADMIN, ROLE_MEMBER, ROLE_READER, *OCTAVIA_ROLES)

# Quota resources: API key -> model column
QUOTA_RESOURCES: Final = (
    "load_balancer",
    "listener",
    "pool",
    "member",
    "health_monitor",
    "l7policy",
    "l7rule",
)
