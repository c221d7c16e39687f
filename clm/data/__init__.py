"""Market data: sources, validation, quarantine and integrity reporting."""
