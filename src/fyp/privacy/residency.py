"""Data residency: a deployment serves one region, and its data directory belongs to it.

A data directory records the region it was made for (``deployment.json``); opening it
for another region is refused, so one region's users are never served (or their data
moved) by a deployment of another through a mistaken flag. Users are homed where they
were created (``PUT /v1/users/{id}``, whose ``region`` must be this deployment's): a
request about a user not homed here is refused without saying whether the user exists
elsewhere, which this deployment cannot know anyway.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEPLOYMENT_FILE = "deployment.json"
FORMAT = 1
# Files that mean a data directory already holds data (so it must have been bound).
_DATA_FILES = ("events.db", "users.db", "impressions.db")


class ResidencyError(Exception):
    """A request or a start that would put one region's user data in another's hands."""


class DataDirError(RuntimeError):
    """A data directory that cannot be opened as this deployment's."""


def not_homed_here(user_id: str, region: str) -> str:
    """The one refusal message: the same whether or not the user exists anywhere."""
    return (
        f"user {user_id!r} is not homed in this deployment (region {region!r}): a user's "
        f"data is served only by their home region's deployment; a new user of this "
        f"region is created with PUT /v1/users/{{id}}"
    )


def bind_data_dir(data_dir: Path, region: str) -> bool:
    """Check that ``data_dir`` is this region's (binding a new one to it); returns
    whether it holds no data yet."""
    path = data_dir / DEPLOYMENT_FILE
    empty = not any((data_dir / name).exists() for name in _DATA_FILES)
    if path.exists():
        try:
            bound = json.loads(path.read_text())["region"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataDirError(f"cannot read {path}: {err}") from None
        if bound != region:
            raise DataDirError(
                f"{data_dir} holds the data of region {bound!r}; this deployment serves "
                f"{region!r} (--region / FYP_REGION). One region's data is never opened "
                "by another's deployment."
            )
        return empty
    if not empty:
        raise DataDirError(
            f"{data_dir} holds data from a version of fyp before residency (raw user ids "
            f"at rest, no {DEPLOYMENT_FILE}); import it again into a new data directory"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "region": region}) + "\n")
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True
