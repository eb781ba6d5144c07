"""Elected actors: each a pure planner plus the I/O that applies its plan."""
