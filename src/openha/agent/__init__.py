"""The host agent: applies instance specs in network namespaces and reports to the API."""
