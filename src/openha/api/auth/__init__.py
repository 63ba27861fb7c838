"""How callers prove who they are, for authentication modes beyond OpenHA's own tokens."""
