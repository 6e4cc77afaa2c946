"""User ids at rest: a keyed hash whose secret lives outside the data directory.

Every user id is replaced by its pseudonym where it enters the engine, so nothing the
engine keeps — the event log, impressions, profiles, learned state, checkpoints — holds
a raw id. Without the secret a pseudonym cannot be tied back to a person (nor can an id
be tested against the data: a plain hash could be, by hashing guesses); with it, the
engine finds a user's data for export and erasure.

The audit log names users by a second keyed hash (:meth:`Pseudonyms.audit_ref`), so
that erasing a user leaves nothing in the data directory that matches their data,
while whoever holds the secret can still check what the log says about a given user.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_BYTES = 32


class SecretError(RuntimeError):
    """The pseudonym secret is missing, unreadable or in the wrong place."""


class Pseudonyms:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise SecretError("the pseudonym secret must be at least 16 bytes")
        self._secret = secret
        # Hashing is ~1 µs; the same few users send most of the requests.
        self.of = functools.lru_cache(maxsize=200_000)(self._hash)

    @classmethod
    def ephemeral(cls) -> Pseudonyms:
        """A random secret kept in memory only (an engine that keeps no files)."""
        return cls(secrets.token_bytes(SECRET_BYTES))

    @classmethod
    def from_file(cls, path: Path, data_dir: Path, create: bool) -> Pseudonyms:
        """The secret in ``path``, made (mode 0600) when absent and ``create``. Refused
        inside ``data_dir``: a copy of the data must not carry its own key."""
        resolved, data = path.resolve(), data_dir.resolve()
        if resolved == data or data in resolved.parents:
            raise SecretError(
                f"the pseudonym secret {path} is inside the data directory {data_dir}; "
                "keep it outside (privacy.secret_file), or a copy of the data carries its key"
            )
        if not path.exists():
            if not create:
                raise SecretError(
                    f"the pseudonym secret {path} is missing, but {data_dir} holds data "
                    "written with one: restore the file (without it no stored user can be "
                    "found again, for a feed, an export or an erasure)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(SECRET_BYTES).hex().encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            secret = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError) as err:
            raise SecretError(f"cannot read the pseudonym secret {path}: {err}") from None
        return cls(secret)

    @staticmethod
    def write_known_secret(path: Path, label: str) -> Path:
        """Write a secret derived from ``label`` to ``path``: for evaluations and
        simulations of public or synthetic data only, whose runs must give the same
        figures each time (the topics source, for one, reads from a per-user offset).
        Never for real users: anyone who knows the label can reverse the pseudonyms."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(hashlib.sha256(f"fyp-known-secret:{label}".encode()).hexdigest())
        return path

    def _hash(self, user_id: str) -> str:
        digest = hashlib.blake2b(
            user_id.encode(), key=self._secret, digest_size=16, person=b"fyp-user"
        )
        return "p" + digest.hexdigest()

    def subkey(self, purpose: str) -> bytes:
        """A secret for another ``purpose`` (signing user tokens), derived from this one
        by HMAC-SHA256: kept where this one is, outside the data directory, and telling
        nothing about it."""
        return hmac.new(self._secret, b"fyp-subkey:" + purpose.encode(), "sha256").digest()

    def audit_ref(self, user_id: str) -> str:
        """How the audit log names a user: unlinkable to the stored data without the
        secret, and different from the pseudonym, so it outlives an erasure."""
        digest = hashlib.blake2b(
            user_id.encode(), key=self._secret, digest_size=12, person=b"fyp-audit"
        )
        return "s" + digest.hexdigest()
