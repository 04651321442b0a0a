"""actdb.ingest."""
