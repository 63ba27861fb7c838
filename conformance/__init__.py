"""Differential check of OpenHA against the real Octavia (`make conformance`)."""
