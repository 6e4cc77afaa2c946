"""fyp: an open, self-hostable For You feed engine."""

__version__ = "0.1.0"
