"""A PostgreSQL store URL, read without psycopg (settings check it where they are read).

The URL is libpq's, ``postgresql://user[:password]@host:port/database``, with two
options of ours in the query: ``schema`` (where the tables are, ``fyp`` by default:
deployments sharing a database need one each) and ``durability`` (``always``, the
default: the server must fsync its commits; ``none``: not checked). Other query options
(``sslmode``, ``connect_timeout``…) go to libpq as they are."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "fyp"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")

Durability = Literal["always", "none"]


@dataclass(frozen=True)
class PgUrl:
    conninfo: str  # the URL without our options: what libpq is given
    schema: str
    durability: Durability


def split_url(url: str) -> PgUrl:
    """``url``'s parts, or a ValueError saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"a PostgreSQL URL starts postgresql://, not {url!r}")
    if not parts.path.strip("/"):
        raise ValueError(f"the PostgreSQL URL {url!r} names no database (…/DATABASE)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in ("schema", "durability")}
    schema = ours.get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(
            f"the PostgreSQL schema {schema!r} is not a plain lower-case name "
            "(letters, digits and _, at most 63)"
        )
    durability = ours.get("durability", "always")
    if durability not in ("always", "none"):
        raise ValueError(f"durability={durability!r}: always or none")
    rest = [(k, v) for k, v in query if k not in ours]
    conninfo = parts._replace(query=urlencode(rest)).geturl()
    return PgUrl(conninfo, schema, "always" if durability == "always" else "none")
