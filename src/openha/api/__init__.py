"""The HTTP API: tenant (Octavia v2), networks (Neutron shapes) and operator routes."""
