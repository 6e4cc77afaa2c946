"""``fyp keys ...``: create, list and revoke the API keys clients send.

Safe to run while the server is up: the server sees a new key at once and a revocation
within a couple of seconds (see ``KeyStore``). Creation and revocation go to the
audit log; the token and its hash never do. The keys and the audit log are the data
dir's files, or the store URL's PostgreSQL schema (``--store``, ``FYP_STORE``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from fyp.config import load_settings
from fyp.privacy.keys import (
    SCOPES,
    ApiKey,
    KeyStore,
    UnknownScopeError,
    validate_scopes,
)
from fyp.types import now_ms

if TYPE_CHECKING:
    from fyp.privacy.audit_log import AuditLog

keys_app = typer.Typer(
    help="API keys: who may call the API, with which scopes.", no_args_is_help=True
)
console = Console()

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the engine keeps its data.")
]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="The stores' URL (postgresql://…): the keys and the audit log are there. "
        "Default: FYP_STORE, else the data dir's files.",
    ),
]
ACTOR = "cli"  # who the audit log says acted: a person at this machine's command line


def _where(data_dir: Path | None, store: str | None) -> tuple[Path, str | None]:
    """The data dir and the store URL: as given, else from the settings."""
    if data_dir is not None and store is not None:
        return data_dir, store
    settings = load_settings(overrides={"data_dir": data_dir, "store": store})
    return settings.data_dir, settings.store


def _name(root: Path, store: str | None) -> str:
    """Where the keys are, for people (a URL without its password)."""
    if store is None:
        return str(root)
    from fyp.storage.postgres.url import split_url

    parts = split_url(store)
    return f"{parts.conninfo.split('@')[-1]} schema {parts.schema}"


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _utc(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def create_audited(
    store: KeyStore,
    audit: AuditLog,
    scopes: Iterable[str],
    region: str | None,
    label: str,
    actor: str,
) -> tuple[ApiKey, str]:
    """Create a key and record it (never its token); a key the audit log could not
    record is revoked again, so none works unrecorded (and its token, not yet shown to
    anyone, is lost with it even if the revocation fails too)."""
    key, token = store.create(scopes, region, label, now_ms())
    try:
        audit.append(
            "key.create",
            actor,
            details={
                "key_id": key.key_id,
                "scopes": sorted(key.scopes),
                "region": key.region,
                "label": key.label,
            },
        )
    except BaseException:
        store.revoke(key.key_id, now_ms())
        raise
    return key, token


def revoke_audited(store: KeyStore, audit: AuditLog, key_id: str, actor: str) -> bool:
    """Record the revocation of a key, then revoke it; False (nothing recorded) if there
    is no such live key. The record comes first, so that a revocation the audit log
    cannot hold is not carried out; one that then fails is recorded as failed."""
    if not any(k.key_id == key_id and k.revoked_at is None for k in store.list()):
        return False
    audit.append("key.revoke", actor, details={"key_id": key_id})
    done = False
    try:
        done = store.revoke(key_id, now_ms())
    finally:
        if not done:  # failed, or another process revoked it in between
            with contextlib.suppress(Exception):
                audit.append("key.revoke", actor, outcome="failed", details={"key_id": key_id})
    return done


@keys_app.command("create")
def create(
    scopes: Annotated[
        list[str],
        typer.Option(
            "--scopes",
            help="Scopes to grant, comma-separated or repeated; 'all' grants every scope.",
        ),
    ],
    data_dir: DataDir = None,
    region: Annotated[
        str | None,
        typer.Option(help="The region whose users the key may touch (default: the deployment's)."),
    ] = None,
    label: Annotated[str, typer.Option(help="What the key is for, for people.")] = "",
    store_url: StoreUrl = None,
) -> None:
    """Create a key and print its token, once."""
    # Imported when used, like the other commands' heavier modules: `fyp --help` and the
    # other subcommands do not pay for it.
    from fyp.storage.backends import open_audit_log, open_key_store

    names = {s.strip() for arg in scopes for s in arg.split(",") if s.strip()}
    try:
        # Checked before anything is opened, so a typo leaves the data dir untouched.
        granted = validate_scopes(SCOPES if "all" in names else names)
    except UnknownScopeError as e:
        raise _fail(str(e), 2) from None
    root, url = _where(data_dir, store_url)
    audit = open_audit_log(url, root)
    try:
        store = open_key_store(url, root)
    except BaseException:
        audit.close()
        raise
    try:
        key, token = create_audited(store, audit, granted, region, label, ACTOR)
    finally:
        store.close()
        audit.close()
    # Plain echo, not rich: the token must come out on one line, unwrapped and unstyled.
    typer.echo(f"key id: {key.key_id}")
    typer.echo(f"scopes: {', '.join(sorted(key.scopes))}")
    typer.echo(f"token:  {token}")
    typer.echo("Store the token now: it is not kept and will not be shown again.")


@keys_app.command("list")
def list_keys(data_dir: DataDir = None, store_url: StoreUrl = None) -> None:
    """Every key, revoked ones included (never their tokens)."""
    from fyp.storage.backends import has_keys_store, open_key_store

    root, url = _where(data_dir, store_url)
    if not has_keys_store(url, root):  # opening the store would create it
        console.print(f"no keys in {root}")
        return
    store = open_key_store(url, root)
    try:
        keys = store.list()
    finally:
        store.close()
    # No outer frame: six columns fit 80 characters only when none is spent on borders.
    table = Table(title=f"API keys: {_name(root, url)}", box=box.SIMPLE_HEAD, show_edge=False)
    # Ids and scopes are never broken inside a word (a folded id cannot be copied); on a
    # narrow terminal the times wrap between date and time and the label folds.
    table.add_column("id", no_wrap=True)
    table.add_column("scopes", no_wrap=True)
    table.add_column("region")
    table.add_column("label", overflow="fold", min_width=8)
    table.add_column("created (UTC)", min_width=10)
    table.add_column("revoked", min_width=10)
    for key in keys:
        table.add_row(
            key.key_id,
            "\n".join(sorted(key.scopes)),
            key.region or "—",
            key.label,
            _utc(key.created_at),
            _utc(key.revoked_at),
        )
    console.print(table)


@contextlib.contextmanager
def _keys_and_audit(
    data_dir: Path | None, store_url: str | None, key_id: str
) -> Iterator[tuple[KeyStore, AuditLog]]:
    """The key store and audit log, for a change to ``key_id``, closed after. The audit
    log is opened first: if it cannot be, no key is changed unrecorded."""
    from fyp.storage.backends import has_keys_store, open_audit_log, open_key_store

    root, url = _where(data_dir, store_url)
    if not has_keys_store(url, root):  # opening the store would create it
        raise _fail(f"no key {key_id} (no keys in {root})", 1)
    audit = open_audit_log(url, root)
    try:
        store = open_key_store(url, root)
    except BaseException:
        audit.close()
        raise
    try:
        yield store, audit
    finally:
        store.close()
        audit.close()


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (k_...), as `fyp keys list` shows.")],
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
) -> None:
    """Revoke a key for good; the server refuses it within a few seconds."""
    with _keys_and_audit(data_dir, store_url, key_id) as (store, audit):
        done = revoke_audited(store, audit, key_id, ACTOR)
    if not done:
        raise _fail(f"no key {key_id}, or it is already revoked", 1)
    typer.echo(f"revoked {key_id}")


@keys_app.command("revoke-tokens")
def revoke_tokens(
    key_id: Annotated[str, typer.Argument(help="The key's id (k_...), as `fyp keys list` shows.")],
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
) -> None:
    """Revoke every user token the key has issued so far; the key itself keeps working.
    The server refuses them within a few seconds."""
    with _keys_and_audit(data_dir, store_url, key_id) as (store, audit):
        # Revoked, then recorded: a revocation the audit log failed to record still holds.
        epoch = store.revoke_tokens(key_id)
        if epoch is not None:
            audit.append("key.revoke_tokens", ACTOR, details={"key_id": key_id, "epoch": epoch})
    if epoch is None:
        raise _fail(f"no key {key_id}, or it is revoked", 1)
    typer.echo(f"revoked the user tokens of {key_id} (issued before epoch {epoch})")
