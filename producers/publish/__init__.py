"""Getting GOPs to floodlight.gops (the buffered publisher, the blocking form) and the ingest telemetry."""
