"""Certificate references read from a real Barbican, as Octavia's barbican cert manager does.

With `OPENHA_KEY_MANAGER=barbican`, OpenHA reads what listeners and pools reference
from the cloud's Barbican with python-barbicanclient, as its service user (the
`OPENHA_KEYSTONE_*` credentials, Octavia's `[service_auth]`): Barbican's endpoint
comes from the Keystone catalogue (`key-manager`, `OPENHA_BARBICAN_INTERFACE`,
`OPENHA_BARBICAN_REGION`) unless `OPENHA_BARBICAN_ENDPOINT` names it. As in
Octavia's API (`_validate_tls_refs` → `set_acls`), when a tenant gives a reference
the API first grants the service user read access to it with the tenant's own
token (a Barbican ACL on the reference and, for a container, on each of its
secrets), then reads it as the service user: a reference the tenant cannot grant
is a 400, even one the service user may read already for another project. The
controller reads as the service user.
A container's parts, or a secret's payload (a PKCS#12 bundle, a CA, a CRL), are
what `openha.certstore.material` checks, as for the embedded store.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from barbicanclient import client as barbican_client
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from keystoneauth1.identity import v3
from sqlalchemy.orm import Session

from openha.certstore.material import SECRET, RefError, Source
from openha.certstore.refs import parse_ref

if TYPE_CHECKING:
    from openha.settings import Settings

log = logging.getLogger(__name__)

# Every call to Keystone or Barbican: the API checks references inside its request
# (a database transaction is open), so a Barbican that hangs must cost seconds only.
TIMEOUT = 10.0


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


class BarbicanKeyManager:
    """Barbican as OpenHA's service user sees it; clients made once, shared by threads."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.keystone_auth_url and settings.keystone_password):
            raise ValueError(
                "key_manager = barbican reads Barbican as OpenHA's service user: set "
                "OPENHA_KEYSTONE_AUTH_URL and OPENHA_KEYSTONE_PASSWORD (and the user's name)"
            )
        self.settings = settings
        self._lock = threading.Lock()
        self._session: ks_session.Session | None = None
        self._client: Any = None

    def _service_session(self) -> ks_session.Session:
        with self._lock:
            if self._session is None:
                cfg = self.settings
                auth = v3.Password(
                    auth_url=cfg.keystone_auth_url,
                    username=cfg.keystone_username,
                    password=cfg.keystone_password,
                    project_name=cfg.keystone_project_name,
                    user_domain_name=cfg.keystone_user_domain_name,
                    project_domain_name=cfg.keystone_project_domain_name,
                )
                self._session = ks_session.Session(auth=auth, timeout=TIMEOUT)
            return self._session

    def endpoint(self) -> str:
        """Barbican's endpoint: the setting, else the catalogue's `key-manager` entry."""
        if self.settings.barbican_endpoint:
            return self.settings.barbican_endpoint.rstrip("/")
        data = self._service_session().get_endpoint_data(
            service_type="key-manager",
            interface=self.settings.barbican_interface,
            region_name=self.settings.barbican_region or None,
        )
        if data is None or not data.catalog_url:
            raise RefError("no key-manager endpoint in the Keystone catalogue")
        return str(data.catalog_url).rstrip("/")

    def client(self) -> Any:
        """python-barbicanclient as the service user."""
        if self._client is None:
            # Outside the lock: finding the endpoint takes it (for the session).
            made = barbican_client.Client(session=self._service_session(), endpoint=self.endpoint())
            with self._lock:
                if self._client is None:
                    self._client = made
        return self._client

    def source(self, session: Session, project_id: str | None) -> Source:
        # Barbican scopes by its own rules (owner project, ACLs): the service user reads
        # what it was granted, whichever project asks.
        return BarbicanSource(self)

    def grant(self, user_token: str | None, ref: str) -> None:
        """Octavia's `set_acls`: the service user may read `ref` (and a container's
        secrets), granted with the tenant's token; RefError when the tenant cannot grant
        it. As in Octavia, that refuses the reference: the service user may read it
        already (another project granted it), and must not serve it to this one."""
        if parse_ref(ref) is None:
            return  # refused by the read
        if not user_token:
            raise RefError(f"Could not retrieve certificate: {ref}")
        try:
            service_user = self._service_session().get_user_id()
            endpoint = self.endpoint()
            user = barbican_client.Client(
                session=ks_session.Session(
                    auth=token_endpoint.Token(endpoint, user_token), timeout=TIMEOUT
                ),
                endpoint=endpoint,
            )
            refs = [ref]
            parsed = parse_ref(ref)
            if parsed is not None and parsed.kind in (None, "containers"):
                try:
                    container = user.containers.get(ref)
                    refs += [secret.secret_ref for secret in container.secrets.values()]
                except Exception:
                    pass  # a secret, not a container (a bare UUID can name either)
            for entity in refs:
                acl = user.acls.get(entity)
                read = acl.get("read")
                if service_user not in read.users:
                    read.users.append(service_user)
                    acl.submit()
        except Exception as exc:
            log.info("could not grant OpenHA read access to %s: %s", ref, type(exc).__name__)
            raise RefError(f"Could not retrieve certificate: {ref}") from None


class BarbicanSource:
    def __init__(self, manager: BarbicanKeyManager) -> None:
        self.manager = manager

    def parts(self, ref: str) -> dict[str, bytes | None]:
        parsed = parse_ref(ref)
        if parsed is None:
            raise RefError(f"Could not retrieve certificate: {ref}")
        try:
            client = self.manager.client()
            if parsed.kind in (None, "containers"):
                try:
                    container = client.containers.get(ref)
                    return {
                        name: _bytes(secret.payload) for name, secret in container.secrets.items()
                    }
                except Exception:
                    if parsed.kind == "containers":
                        raise
            secret = client.secrets.get(ref)
            return {SECRET: _bytes(secret.payload)}
        except Exception as exc:
            # Never the material, nor the server's text (it may quote a payload).
            log.info("Barbican could not give %s: %s", ref, type(exc).__name__)
            raise RefError(f"Could not retrieve certificate: {ref}") from None
