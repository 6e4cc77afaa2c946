"""``fyp audit ...``: the algorithm audit report from the command line.

The stores are read through their own classes (no SQL here): the data dir's SQLite
files, or the store URL's PostgreSQL schema (``--store``, ``FYP_STORE``). A SQLite store
whose file is missing is read as empty rather than opened, since opening one creates
it: an audit leaves the data dir as it found it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from fyp.types import DAY_MS, ModerationAction, UserProfile, Video, now_ms

if TYPE_CHECKING:
    from fyp.audit.report import AuditReport

audit_app = typer.Typer(help="What the feed did: reports for outside review.", no_args_is_help=True)
console = Console()

DEFAULT_WINDOW_DAYS = 30

StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="The stores' URL (postgresql://…) when they are not the data dir's files. "
        "Default: FYP_STORE, if set.",
    ),
]


def _store_url(store: str | None) -> str | None:
    from fyp.config import load_settings

    return store if store is not None else load_settings().store


class _Closable(Protocol):
    def close(self) -> None: ...


_Store = TypeVar("_Store", bound=_Closable)
_T = TypeVar("_T")


def parse_time_ms(text: str, option: str) -> int:
    """``YYYY-MM-DD`` (that day's UTC midnight) or Unix milliseconds, as Unix ms; a
    :class:`typer.BadParameter` naming ``option`` otherwise."""
    cleaned = text.strip()
    if cleaned.isdigit():
        return int(cleaned)
    try:
        if len(cleaned) != 10:  # fromisoformat also takes 20220425 and 2022-W17-1
            raise ValueError(cleaned)
        day = date.fromisoformat(cleaned)
    except ValueError:
        raise typer.BadParameter(
            f"not a date (want YYYY-MM-DD, a UTC day) or Unix ms: {text!r}", param_hint=option
        ) from None
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def _read_store(
    path: Path,
    open_store: Callable[[Path], _Store],
    read: Callable[[_Store], _T],
    empty: _T,
    missing: str | None,
) -> _T:
    """``read`` of the store at ``path``, closed afterwards; ``empty`` (with the
    ``missing`` warning, if any) when its file is not there."""
    if not path.is_file():
        if missing:
            console.print(f"[yellow]warning:[/yellow] {missing}")
        return empty
    with contextlib.closing(open_store(path)) as store:
        return read(store)


def _videos(data_dir: Path) -> dict[str, Video]:
    from fyp.catalog.store import SqliteCatalogStore

    return _read_store(
        data_dir / "catalog.db",
        SqliteCatalogStore,
        lambda store: {v.video_id: v for v in store.all()},
        {},
        f"no catalog in {data_dir}: creators unknown",
    )


def _profiles(data_dir: Path) -> dict[str, UserProfile]:
    from fyp.users.store import SqliteUserStore

    return _read_store(
        data_dir / "users.db",
        SqliteUserStore,
        lambda store: store.profiles(),
        {},
        f"no user store in {data_dir}: ages unknown",
    )


def _moderation(data_dir: Path) -> list[ModerationAction]:
    from fyp.catalog.moderation import SqliteModerationStore

    # No file: nothing was ever moderated (no warning).
    return _read_store(
        data_dir / "moderation.db", SqliteModerationStore, lambda s: s.history(), [], None
    )


def _sqlite_audit(data_dir: Path, since_ms: int, until_ms: int) -> AuditReport:
    """The audit of the data dir's SQLite stores (an error exit when it has no
    impression log)."""
    from fyp.audit.report import build_audit
    from fyp.events.impressions import SqliteImpressionLog

    impressions_db = data_dir / "impressions.db"
    if not data_dir.is_dir():
        console.print(f"[red]error:[/red] no data dir at {data_dir}")
        raise typer.Exit(1)
    if not impressions_db.is_file():
        console.print(f"[red]error:[/red] no impression log in {data_dir} (impressions.db)")
        raise typer.Exit(1)
    videos = _videos(data_dir)
    profiles = _profiles(data_dir)
    moderation = _moderation(data_dir)
    log = SqliteImpressionLog(impressions_db)
    try:
        return build_audit(
            log.between(since_ms, until_ms),
            videos,
            profiles,
            log.filter_counts(since_ms, until_ms),
            moderation,
            since_ms,
            until_ms,
        )
    finally:
        log.close()


def headline_table(report: AuditReport) -> Table:
    """The report's headline numbers, for the terminal."""
    t, c = report.totals, report.concentration
    table = Table(title=f"Audit {report.period.since} … {report.period.until}")
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("value", justify="right")

    def pct(value: float) -> str:
        return f"{100 * value:.1f}%"

    def num(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    for name, value in (
        ("impressions", f"{t.impressions:,}"),
        ("users / videos / creators", f"{t.users:,} / {t.videos:,} / {t.creators:,}"),
        ("days with impressions", f"{t.days_covered:,}"),
        ("exploration share", pct(report.exploration_share)),
        ("non-personalised share", pct(report.non_personalised.share)),
        ("top 10 creators' share", pct(report.top_creators.top10_share)),
        ("creator entropy, mean per user (bits)", num(c.creator_entropy_bits)),
        ("creator Gini", num(c.creator_gini)),
        ("candidates filtered", f"{report.filters.total:,}"),
        ("moderation actions", f"{report.moderation.actions:,}"),
    ):
        table.add_row(name, value)
    return table


@audit_app.command("report")
def report(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the engine keeps its data.")],
    out: Annotated[Path, typer.Option("--out", help="Write the HTML report here.")],
    since: Annotated[
        str | None,
        typer.Option(
            help="Start of the period: YYYY-MM-DD (UTC) or Unix ms (default: 30 days before "
            "--until)."
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            help="End of the period, excluded: YYYY-MM-DD (UTC) or Unix ms (default: now)."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report's numbers as JSON here.")
    ] = None,
    store: StoreUrl = None,
) -> None:
    """Audit what the feed served over a period: source mix, exploration, concentration
    by cohort, top creators, what the filters removed and moderation; write one
    self-contained HTML page (and the JSON)."""
    from fyp.audit.report import build_audit, write_html, write_json

    until_ms = now_ms() if until is None else parse_time_ms(until, "--until")
    if since is None:
        since_ms = until_ms - DEFAULT_WINDOW_DAYS * DAY_MS
    else:
        since_ms = parse_time_ms(since, "--since")
    if since_ms >= until_ms:
        raise typer.BadParameter("must be before --until", param_hint="--since")
    url = _store_url(store)
    if url is not None:
        from fyp.storage.backends import open_stores

        stores = open_stores(url, data_dir)
        try:
            audit = build_audit(
                stores.impressions.between(since_ms, until_ms),
                {v.video_id: v for v in stores.catalog.all()},
                stores.users.profiles(),
                stores.impressions.filter_counts(since_ms, until_ms),
                stores.moderation.history(),
                since_ms,
                until_ms,
            )
        finally:
            stores.close()
    else:
        audit = _sqlite_audit(data_dir, since_ms, until_ms)
    write_html(audit, out)
    console.print(f"HTML: {out}")
    if json_out is not None:
        write_json(audit, json_out)
        console.print(f"JSON: {json_out}")
    console.print(headline_table(audit))


@audit_app.command("verify")
def verify_log(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the engine keeps its data.")],
    store: StoreUrl = None,
) -> None:
    """Check the hash-chained audit log (audit.log, or the store URL's audit_log table):
    every record intact and none missing, from the first to the one its head last
    recorded. Exits 1 at the first bad record."""
    from fyp.storage.backends import verify_audit_log

    url = _store_url(store)
    if url is None and not data_dir.is_dir():
        console.print(f"[red]error:[/red] no data dir at {data_dir}")
        raise typer.Exit(1)
    result = verify_audit_log(url, data_dir)
    if result.ok:
        console.print(f"audit log OK: {result.records} records, chain intact")
        return
    where = "its end" if result.bad_line is None else f"line {result.bad_line}"
    if result.bad_seq is not None:
        where += f" (seq {result.bad_seq})"
    console.print(f"[red]audit log BROKEN[/red] at {where}: {result.reason}", highlight=False)
    console.print(f"{result.records} records verified before it")
    raise typer.Exit(1)
