"""Pure domain rules: value grammars, Octavia constants, status derivation. No I/O here."""
