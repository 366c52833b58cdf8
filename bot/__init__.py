"""The core: request model, option parsing, rules, catalog, service, queue and CLI (no torch, no chat SDKs)."""
