"""Network lab (bridge, backend servers, client namespaces) for tests and `openha demo`."""

from openha.lab.netlab import BackendServer, ClientNamespace, ClientResponse, Lab, cleanup_stale

__all__ = ["BackendServer", "ClientNamespace", "ClientResponse", "Lab", "cleanup_stale"]
