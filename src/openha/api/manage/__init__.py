"""Operator API (/v2/manage/*): admin-only views and actions the tenant API lacks."""
