"""Config renderers: turn a validated `LoadBalancerSpec` into the files an instance runs.

`haproxy` renders one HAProxy configuration per load balancer (all listeners) from
the Jinja2 templates in `templates/`. Renderers are pure functions: no I/O beyond
reading their templates, and every user value is re-checked against the grammars
in `openha.domain.grammar` before it is written, so a value that slipped past the
API still cannot break out of its token.
"""
