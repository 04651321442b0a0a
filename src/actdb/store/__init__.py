"""actdb.store."""
