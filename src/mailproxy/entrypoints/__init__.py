"""Entrypoints: the command line (and, later, the HTTP server)."""
