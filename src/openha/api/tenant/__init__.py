"""Tenant API: Octavia's /v2/lbaas resources."""
