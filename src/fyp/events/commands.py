"""``fyp log ...``: the event log on Redis — who holds it back, and trimming it.

``fyp log status`` lists the readers (processes folding the log from a checkpoint, with
the offset their checkpoint holds) and the consumer groups, and how far the log may be
trimmed; ``fyp log trim --through N`` (or ``--keep N``) deletes the oldest events, never
past that; ``fyp log forget-reader NAME`` stops a reader that is gone for good from
holding trimming back. The rule is in docs/cluster.md ("Consumer groups and trimming").
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from fyp.config import load_settings
from fyp.events.backends import open_event_log

if TYPE_CHECKING:
    from fyp.events.redis_log import RedisEventLog

log_app = typer.Typer(
    help="The event log on Redis: its readers and groups, and trimming it.",
    no_args_is_help=True,
)
console = Console()

EventLogUrl = Annotated[
    str | None,
    typer.Option("--event-log", help="The log: redis://host:port/db?prefix=p (or FYP_EVENT_LOG)."),
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="A TOML settings file.")]


def _open(event_log: str | None, config: Path | None) -> RedisEventLog:
    from fyp.events.redis_log import RedisEventLog  # (redis only when asked for)

    settings = load_settings(config, {"event_log": event_log})
    log = None if settings.event_log is None else open_event_log(settings.event_log, Path("."))
    if not isinstance(log, RedisEventLog):
        if log is not None:
            log.close()
        console.print(
            "[red]error:[/red] trimming is for an event log on Redis (--event-log redis://…); "
            "the embedded log keeps events until retention deletes them"
        )
        raise typer.Exit(code=2)
    return log


@log_app.command("status")
def status(event_log: EventLogUrl = None, config: ConfigFile = None) -> None:
    """The log's end, its readers and groups, and how far it may be trimmed."""
    from fyp.events.redis_groups import groups

    log = _open(event_log, config)
    try:
        table = Table(title=f"events {log.count():,}, last offset {log.last_offset():,}")
        table.add_column("holds trimming back")
        table.add_column("kind")
        table.add_column("done through", justify="right")
        table.add_column("pending", justify="right")
        for name, offset in sorted(log.readers().items()):
            table.add_row(name, "reader (checkpoint)", f"{offset:,}", "")
        for g in groups(log):
            table.add_row(g.name, "consumer group", f"{g.done_through:,}", f"{g.pending:,}")
        console.print(table)
        console.print(f"may be trimmed through offset {log.trim_bound():,}")
    finally:
        log.close()


@log_app.command("trim")
def trim(
    through: Annotated[
        int | None, typer.Option(help="Delete the events at or below this offset.")
    ] = None,
    keep: Annotated[int | None, typer.Option(help="Keep the newest this many offsets.")] = None,
    event_log: EventLogUrl = None,
    config: ConfigFile = None,
) -> None:
    """Delete the oldest events, never past what every reader's checkpoint and every
    consumer group has done (``fyp log status``)."""
    if (through is None) == (keep is None):
        console.print("[red]error:[/red] give one of --through N and --keep N")
        raise typer.Exit(code=2)
    if (through is not None and through < 0) or (keep is not None and keep < 0):
        console.print("[red]error:[/red] --through and --keep are offsets: 0 or more")
        raise typer.Exit(code=2)
    log = _open(event_log, config)
    try:
        wanted = through if through is not None else log.last_offset() - (keep or 0)
        bound = log.trim_bound()
        deleted = log.trim(wanted)
        console.print(
            f"deleted {deleted:,} events through offset {min(wanted, bound):,}"
            + (f" (asked {wanted:,}; held back by a reader or group)" if bound < wanted else "")
        )
    finally:
        log.close()


@log_app.command("forget-reader")
def forget_reader(
    name: Annotated[str, typer.Argument(help="A reader's name, as fyp log status lists it.")],
    event_log: EventLogUrl = None,
    config: ConfigFile = None,
) -> None:
    """Stop a reader that is gone for good from holding trimming back (a process that
    still runs records its offset again at its next checkpoint)."""
    log = _open(event_log, config)
    try:
        if not log.forget_reader(name):
            console.print(f"[red]error:[/red] no reader {name!r}")
            raise typer.Exit(code=1)
        console.print(f"forgot reader {name}")
    finally:
        log.close()
