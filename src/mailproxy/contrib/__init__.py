"""Integrations of mailproxy with other frameworks, each behind its own extra."""
