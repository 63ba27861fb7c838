"""The embedded certificate store: Barbican-style secrets and containers, sealed at rest.

`sealing` holds the operator's keys, `store` the rows and their project scoping,
`refs` reads the references listeners and pools carry, and `material` turns what
a reference names into checked certificates (`openha.domain.certificates`).
"""
