"""service: retrieve, decide, answer — the HTTP API and the CLI."""
