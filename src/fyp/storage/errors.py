"""Faults of stores that are servers (Redis), as the API tells them apart from bugs."""

from __future__ import annotations


class StorageUnavailableError(Exception):
    """A store's server cannot be reached now (down, restarting, loading its data, timed
    out) or could not finish what was asked: the operator's to fix and the client's to
    wait out (the API answers 503 with a Retry-After), not a bug in the request."""
