"""kb: the knowledge base — content, schema, loader, validation, settings and errors."""
