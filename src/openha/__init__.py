"""OpenHA: load balancers as a service on HAProxy and keepalived, with Octavia's v2 API."""

__version__ = "0.1.0"
