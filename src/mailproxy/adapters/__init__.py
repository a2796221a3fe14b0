"""Adapters: technology behind the ports (memory, SQLite, SMTP, capture files)."""
