"""Values and their checks: plain data, how it is built, shown and moved (no I/O)."""
