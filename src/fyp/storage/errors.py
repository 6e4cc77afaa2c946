"""Faults of stores that are servers (Redis), as the API tells them apart from bugs."""

from __future__ import annotations


class StorageUnavailableError(OSError):
    """A store's server cannot be reached now (down, restarting, loading its data, timed
    out) or could not finish what was asked: the operator's to fix and the client's to
    wait out, not a bug in the request. An OSError, like the disk's faults, so that what
    retries those (the learning loop) and answers them (the API's 503 with a
    Retry-After, fyp.api.errors) treats it the same way."""
