"""Embedded storage: SQLite connections. Only store modules import this package."""
