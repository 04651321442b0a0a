"""actdb.query."""
