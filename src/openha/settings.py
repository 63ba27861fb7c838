"""Process settings: defaults, overridden by a TOML file, overridden by OPENHA_* variables."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from openha.domain.logtargets import parse_targets

# Where a root agent keeps its state when its default place (`<state_dir>/agent`) lies
# below a directory others cannot enter (`make run` in root's 0700 home): keepalived
# runs pairs' notify scripts as an unprivileged user, who must reach them.
HOST_AGENT_DIRS = Path("/var/lib/openha/agents")


def _traversable(path: Path) -> bool:
    """Whether every existing directory down to `path` lets others pass (o+x)."""
    for level in [path, *path.parents]:
        try:
            if not level.stat().st_mode & 0o001:
                return False
        except FileNotFoundError:
            continue  # made later, by us, traversable
        except OSError:
            return False
    return True


def default_agent_dir(state_dir: Path) -> Path:
    """`<state_dir>/agent`, unless root's agent could not give its script user a way in
    there: then a directory of its own under `HOST_AGENT_DIRS`, named after the state
    directory (two checkouts on a host get two)."""
    wanted = state_dir / "agent"
    if os.geteuid() != 0 or _traversable(wanted):
        return wanted
    key = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    return HOST_AGENT_DIRS / key


def _config_file() -> Path | None:
    explicit = os.environ.get("OPENHA_CONFIG")
    if explicit:
        return Path(explicit)
    default = Path("/etc/openha/openha.toml")
    return default if default.exists() else None


class Settings(BaseSettings):
    """Everything a process may need; each service reads only its part."""

    model_config = SettingsConfigDict(env_prefix="OPENHA_", extra="ignore")

    state_dir: Path = Path("./var")
    database_url: str = ""
    api_bind: str = "127.0.0.1:9876"
    # Public base URL for links in the version document; derived from the request when empty.
    api_public_url: str = ""
    auth: Literal["token", "noauth", "keystone"] = "token"
    # An operator's Octavia policy.yaml (or JSON), overriding Octavia's default rules.
    policy_file: Path | None = None
    # auth = "keystone": tokens validated by keystonemiddleware with this service user.
    keystone_auth_url: str = ""
    keystone_username: str = "openha"
    keystone_password: str = ""
    keystone_project_name: str = "service"
    keystone_user_domain_name: str = "Default"
    keystone_project_domain_name: str = "Default"
    # How long a validated token is trusted before Keystone is asked again (revocations
    # show after at most this long): keystonemiddleware's token_cache_time.
    keystone_token_cache_time: int = Field(default=300, ge=-1)
    # Where listeners' and pools' certificate references are read: OpenHA's own store
    # (`local`) or the cloud's Barbican (`barbican`: as the service user above, its
    # endpoint from the catalogue unless barbican_endpoint names it).
    key_manager: Literal["local", "barbican"] = "local"
    barbican_endpoint: str = ""
    barbican_interface: str = "public"
    barbican_region: str = ""
    # A scrape credential for /metrics (`Authorization: Bearer <it>`, what Prometheus'
    # `authorization.credentials_file` sends), so a scraper needs no admin token.
    metrics_token: str = ""

    # Controller
    # A pass is one indexed query when nothing is due: polling often is cheap, and it
    # bounds how long a change waits before the controller picks it up.
    controller_interval: float = 0.1
    # How often the controller looks for LBs whose reported health changed (one
    # indexed query when none did): it bounds how late a member's state shows.
    observe_interval: float = 0.25
    controller_lease_seconds: float = 30.0
    retry_backoff_max: float = 60.0
    # Reconciles run in parallel on this many workers (controller-runtime's
    # MaxConcurrentReconciles), at most `controller_workers_per_host` of them on
    # load balancers of one host, so a slow or dead agent holds back only its own.
    # A pair's failover holds a call slot on both of its hosts while it pushes to one
    # and then the other (`providers.haproxy.driver`): with 4 per host, a host's lost
    # pairs were rebuilt 4 at a time with each agent half idle.
    controller_workers: int = Field(default=16, ge=1, le=256)
    controller_workers_per_host: int = Field(default=8, ge=1, le=256)
    # Level-triggered safety net: how often the controller looks over the whole fleet
    # for LBs whose data plane lags though nobody asked for a pass.
    controller_resync_interval: float = 30.0
    # Operations (`openha.controller.operations`): how many LBs a drain moves at once,
    # and how long a migrated instance drains its connections before it is removed.
    drain_concurrency: int = Field(default=4, ge=1, le=256)
    migrate_drain_timeout: float = Field(default=10.0, ge=0, le=3600)
    migrate_ready_timeout: float = Field(default=60.0, ge=1, le=3600)
    # APIs and controllers beat in the database this often; one silent for
    # `service_dead_after` is gone (its claims are taken over, hosts are not judged).
    service_beat_interval: float = 1.0
    service_dead_after: float = 3.0
    # Longest wait for one agent call (apply, delete); connecting gets 2 s. A host whose
    # silence the heartbeats report is probed with `agent_probe_timeout` first.
    agent_timeout: float = 15.0
    agent_probe_timeout: float = 1.0
    default_provider: str = "haproxy"

    # Quota defaults, -1 means unlimited (Octavia's semantics).
    quota_load_balancer: int = -1
    quota_listener: int = -1
    quota_pool: int = -1
    quota_member: int = -1
    quota_health_monitor: int = -1
    quota_l7policy: int = -1
    quota_l7rule: int = -1

    # Agent and hosts
    agent_bind: str = "127.0.0.1:9877"
    # Where the agent keeps its own state (instances it applied, logs); several
    # agents on one machine each get their own. Default: `default_agent_dir`.
    agent_dir: Path | None = None
    # The API the agent registers with and heartbeats to, and its enrolment token.
    agent_api_url: str = "http://127.0.0.1:9876"
    agent_token: str = ""
    # How the controller reaches this agent, when agent_bind is not it (NAT, a VIP, DNS).
    agent_public_url: str = ""
    # TLS for the controller → agent API: the agent serves HTTPS with this certificate
    # and key; the controller checks agents' certificates against agent_ca_file
    # (the system CAs when empty).
    agent_tls_cert: Path | None = None
    agent_tls_key: Path | None = None
    agent_ca_file: Path | None = None
    # Where the agent keeps certificate keys, on a tmpfs it mounts there when the
    # directory is on a disk; unset: /run/openha/keys/<a digest of agent_dir>.
    agent_keys_dir: Path | None = None
    host_name: str = Field(default_factory=lambda: os.uname().nodename)
    availability_zone: str = ""
    # Instances this host may run; unset, the control plane derives it from the memory
    # and file descriptors the agent reports (`openha.domain.capacity`).
    host_capacity: int | None = Field(default=None, ge=0, le=1_000_000)
    heartbeat_interval: float = 1.0
    # An instance the API does not want (an orphan) is removed only once it has been
    # unwanted this long, unless the API shows its load balancer running elsewhere: a
    # database restored from a backup, or a control plane reading stale data, must
    # not wipe live traffic. 0 removes orphans at once.
    orphan_grace_seconds: float = Field(default=300.0, ge=0)
    # Namespaces and processes no instance directory on the host explains (strays,
    # `agent.strays`): looked for this often, removed once unexplained this long.
    stray_scan_interval: float = Field(default=60.0, gt=0)
    stray_grace_seconds: float = Field(default=300.0, ge=0)
    # What heartbeats carry besides changes: every instance's counters and process
    # state once per `stats_interval`, and its whole status (changed or not) once per
    # `report_resync_interval`, both spread over the heartbeats.
    # 30 s: the sweep is most of an idle agent's work (a thousand instances, 33 reads/s);
    # member and pool state changes do not wait for it (HAProxy's log lines trigger a read).
    stats_interval: float = 30.0
    report_resync_interval: float = 300.0
    # How many instances the agent adopts, restarts or removes at once (its own work
    # queue; applies pushed by controllers run in the HTTP server's threads).
    agent_parallelism: int = Field(default=8, ge=1, le=256)
    # The agent raises the kernel's neighbour (ARP/NDP) table, shared by every
    # namespace, to at least this many entries (default 1024 overflows with about a
    # thousand instances), and the per-CPU input backlog above a full bridge's flood
    # (`agent.hostlimits`); 0 leaves the kernel's limits alone.
    agent_neighbour_table: int = Field(default=65536, ge=0)
    host_down_after: float = 5.0
    # Access logs when the flavor does not say: "all" (a line per request), "errors"
    # or "none".
    default_access_log: Literal["all", "errors", "none"] = "all"
    # Access logs on agent hosts (see `openha.agent.logpipe`): HAProxy hands its lines to
    # a ring buffer that the agent's own rsyslogd drains into per-LB files; rsyslog
    # and these limits keep them bounded.
    # Bytes of HAProxy's log ring per instance: what rides out a stalled rsyslogd.
    log_ring_size: int = Field(default=1 << 20, ge=1 << 16, le=1 << 28)
    # Disk for one load balancer's files on a host, and for all of them together.
    log_lb_quota_bytes: int = Field(default=256 << 20, ge=1 << 16)
    log_host_quota_bytes: int = Field(default=8 << 30, ge=1 << 16)
    # A file is closed and a new one begun at this size (at most a quarter of the quota).
    log_segment_bytes: int = Field(default=16 << 20, ge=1 << 12)
    # Logs of a load balancer that left the host stay this long (seconds), then go.
    log_retention_seconds: float = Field(default=7 * 86400, ge=0)
    # Remote syslog: disk spool per host while collectors are unreachable; past it,
    # lines are dropped and a `logs.dropped` event says how many.
    log_spool_bytes: int = Field(default=1 << 30, ge=1 << 16)
    # CA bundle checking TLS syslog collectors.
    log_tls_ca_file: Path = Path("/etc/ssl/certs/ca-certificates.crt")
    # Delivery for every load balancer of the deployment (a JSON list, as a flavor's
    # `log_targets`): {"type": "syslog", "host": ..., "port": 514, "protocol": "tcp"}
    # or {"type": "s3", "endpoint": "https://...", "bucket": ..., "interval": 300}.
    log_targets: list[dict[str, Any]] = Field(default_factory=list)
    # HAProxy threads per instance: fixed, never the host's core count (a 64-core host
    # must not give each of a thousand load balancers 64 threads). See bench/density.py.
    # The sandbox of every instance (`agent.sandbox`): uids from a range no passwd entry
    # uses, recorded host-wide; cgroups below `sandbox_cgroup_parent` (empty: see
    # `agent.cgroups`); default limits for flavors that set none (None: no limit).
    sandbox_uid_base: int = Field(default=1_000_000_000, ge=65536, le=2_000_000_000)
    sandbox_uid_count: int = Field(default=1_000_000, ge=16, le=100_000_000)
    sandbox_uid_registry: Path = Path("/var/lib/openha/lb-uids")
    sandbox_cgroup_parent: str = Field(default="", pattern=r"^(/[A-Za-z0-9_.-]+)*/?$")
    sandbox_cpu_weight: int = Field(default=100, ge=1, le=10_000)
    sandbox_cpu_max: float | None = Field(default=None, ge=0.01, le=1024)
    sandbox_memory_max_mb: int | None = Field(default=2048, ge=16, le=1 << 20)
    sandbox_pids_max: int | None = Field(default=1024, ge=16, le=4_194_304)
    haproxy_nbthread: int = Field(default=1, ge=1, le=64)
    # Connections a listener with connection_limit -1 (unlimited) may hold; an
    # instance's global maxconn is the sum over its listeners, within the FD limit.
    haproxy_default_maxconn: int = Field(default=2000, ge=1, le=1_000_000)
    # Automatic failover pauses when more than this share of hosts is down at once:
    # a network partition must not turn into a rebuild storm.
    failover_max_down_fraction: float = 0.5

    # Housekeeping (`controller.retention`): audit records and events older than this
    # many days are removed (0 keeps them), this many rows per transaction, this often.
    audit_retention_days: float = Field(default=90, ge=0)
    event_retention_days: float = Field(default=30, ge=0)
    retention_batch: int = Field(default=1000, ge=1, le=100_000)
    retention_interval: float = Field(default=300.0, gt=0)
    # A follower of the event stream is cut after `event_follow_max_seconds` at most.
    event_follow_max_seconds: float = Field(default=3600.0, gt=0)
    # Deliveries: `webhook_workers` at once, each within `webhook_timeout`; a failed one
    # is tried again after webhook_retry_base * 2^(n-1) s (at most webhook_retry_max),
    # `webhook_max_attempts` times in all; a webhook whose last
    # `webhook_disable_after` attempts all failed is disabled (with an event).
    webhook_workers: int = Field(default=8, ge=1, le=256)
    webhook_timeout: float = Field(default=5.0, gt=0)
    webhook_retry_base: float = Field(default=2.0, gt=0)
    webhook_retry_max: float = Field(default=600.0, gt=0)
    webhook_max_attempts: int = Field(default=12, ge=1)
    webhook_disable_after: int = Field(default=20, ge=1)
    # Certificate store (`openha.certstore`): Fernet keys (urlsafe base64 of 32 bytes).
    # The first seals new payloads, every one opens; to rotate, put a new key first and
    # run `openha certstore reseal`. Empty: a key made on first use in <state_dir>/certstore.key.
    certstore_keys: list[str] = Field(default_factory=list)
    # A `certificate.expiring` event this many days before a listener's certificate expires.
    certificate_warning_days: int = Field(default=30, ge=0, le=3650)

    # VRRP for ACTIVE_STANDBY pairs: v3 allows sub-second adverts (~0.6 s failover).
    vrrp_version: Literal[2, 3] = 3
    vrrp_advert_interval: float = 0.25

    @field_validator("log_targets")
    @classmethod
    def _log_targets(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [t.model_dump() for t in parse_targets(value)]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def model_post_init(self, __context: Any) -> None:
        self.state_dir = self.state_dir.resolve()
        self.agent_dir = (self.agent_dir or default_agent_dir(self.state_dir)).resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.state_dir / 'openha.db'}"

    @property
    def api_host_port(self) -> tuple[str, int]:
        host, _, port = self.api_bind.rpartition(":")
        return host, int(port)

    @property
    def agent_host_port(self) -> tuple[str, int]:
        host, _, port = self.agent_bind.rpartition(":")
        return host, int(port)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
