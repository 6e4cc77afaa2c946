"""``fyp eval ...``: the evaluation harness from the command line."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

eval_app = typer.Typer(help="Measure how good the feeds are.", no_args_is_help=True)
console = Console()


def _split_methods(methods: list[str] | None) -> list[str] | None:
    """``--methods a,b --methods c`` → [a, b, c]; None for all."""
    if not methods:
        return None
    return [m.strip() for group in methods for m in group.split(",") if m.strip()]


@eval_app.command("kuairand")
def kuairand(
    data: Annotated[
        Path, typer.Option("--data", help="Folder with KuaiRand log files and video features.")
    ],
    train_until: Annotated[str, typer.Option(help="Last training day, YYYY-MM-DD.")],
    test_from: Annotated[str, typer.Option(help="First test day, YYYY-MM-DD.")],
    test_until: Annotated[
        str | None, typer.Option(help="Last test day (default: the end of the logs).")
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            help="Methods to compare, comma-separated (default: all but the served page's "
            "ablations fyp_no_explore, fyp_no_spacing, fyp_no_explore_no_spacing, "
            "fyp_no_scorer)."
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="A sample of test users and fewer resamples (about a minute).")
    ] = False,
    users: Annotated[int | None, typer.Option(help="Sample this many test users.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for samples, bootstrap and random.")] = 0,
    bootstrap: Annotated[
        int | None, typer.Option(help="Bootstrap resamples (default 1000; 200 with --quick).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Engine settings (TOML) to evaluate.")
    ] = None,
    online: Annotated[
        bool,
        typer.Option(
            help="Also run the engine's rankers online through the test day (score, then "
            "learn): the <ranker>_online rows, and the first ranker online with each "
            "user's own state held as training left it."
        ),
    ] = False,
    walk: Annotated[
        str | None,
        typer.Option(
            help="'daily': walk the test days one at a time; each method answers a day "
            "with what it knew at its start, then learns it (the engine online, the "
            "baselines refitted), with a frozen row for the engine. Per-day and pooled "
            "figures."
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write an HTML report with plots here.")
    ] = None,
) -> None:
    """Train every method on the days up to --train-until (the engine through its own
    ingestion and learning path), then rank for the test days without letting any test
    outcome in; print the table, write the JSON and the HTML report."""
    from fyp.eval.offline import default_methods, evaluate_kuairand, method_names
    from fyp.eval.protocol import Split, parse_day
    from fyp.eval.report import (
        KUAIRAND_CREDIT,
        metrics_table,
        walk_table,
        write_html,
        write_json,
    )
    from fyp.eval.walk import WALKS, walk_rows

    try:
        split = Split(
            parse_day(train_until),
            parse_day(test_from),
            None if test_until is None else parse_day(test_until),
        )
        chosen = _split_methods(methods)
        unknown = [m for m in chosen or [] if m not in method_names()]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {', '.join(method_names())}")
        if walk is not None and walk not in WALKS:
            raise ValueError(f"unknown walk {walk!r}; known: {', '.join(WALKS)}")
        if walk is not None and online:
            raise ValueError("--online and --walk: one or the other (see docs/evaluation.md)")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    started = time.perf_counter()
    names = chosen or list(default_methods())
    total = len(names) if walk is None else len(walk_rows(names))
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        overall = bar.add_task("methods", total=total)
        rows = bar.add_task("engine: replaying training rows", total=None, visible=False)

        def step(what: str) -> None:
            bar.update(overall, description=what)

        def imported(done: int, of: int) -> None:
            bar.update(rows, completed=done, total=of, visible=done < of)

        try:
            result = evaluate_kuairand(
                data,
                split,
                chosen,
                quick=quick,
                max_users=users,
                seed=seed,
                n_boot=bootstrap,
                config=config,
                online=online,
                walk=walk,
                step=step,
                import_progress=imported,
                done=lambda _: bar.advance(overall),
            )
        except (FileNotFoundError, ValueError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
    result["protocol"]["wall_s"] = round(time.perf_counter() - started, 1)
    command = shlex.join(["fyp", *sys.argv[1:]])
    result["protocol"]["command"] = command
    p = result["protocol"]
    who = "users" if walk is None else "user-days"
    console.print(
        f"train ≤ {p['train_until']}: {p['train_rows']:,} rows, {p['train_users']:,} users · "
        f"test {p['test_from']}…{p['test_until'] or 'end'}: {p['test_rows']:,} impressions "
        f"of {p['test_users']:,} {who}; {p['ranking_users']:,} {who} rank the catalog of "
        f"{p['catalog_videos']:,} videos · seed {seed} · {p['wall_s']} s"
    )
    if walk is not None:
        for metric in ("recall@50", "ndcg@50"):  # each day's other figures: JSON, report
            console.print(walk_table(result, metric))
    title = None if walk is None else "Pooled over the walk's days"
    console.print(metrics_table(result, title=title))
    if json_out is not None:
        write_json(result, json_out)
        console.print(f"JSON: {json_out}")
    if report is not None:
        write_html(result, report, command)
        console.print(f"report: {report}")
    console.print(KUAIRAND_CREDIT)


@eval_app.command("simulate")
def simulate(
    methods: Annotated[
        list[str] | None,
        typer.Option(
            help="Methods, comma-separated: fyp, fyp-http, fyp-learned, fyp-scorer, random, "
            "popular, oracle "
            "(default: fyp, random, popular, oracle)."
        ),
    ] = None,
    users: Annotated[int, typer.Option(help="Simulated users.")] = 200,
    sessions: Annotated[int, typer.Option(help="Sessions per user (one a simulated day).")] = 8,
    session_length: Annotated[int, typer.Option(help="Feed requests per session, at most.")] = 3,
    count: Annotated[int, typer.Option(help="Videos per feed request.")] = 10,
    videos: Annotated[int, typer.Option(help="Videos in the simulated world.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Seed for the world, sessions and bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1_000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results here.")] = None,
) -> None:
    """Simulated users in daily sessions against each method (the engine through the
    same pipeline as serving): watch time per session, like rate, diversity, creator
    concentration, cold-start exposure, and whether each user's topics narrow over time."""
    from rich.progress import Progress

    from fyp.eval.closed_loop import closed_loop_table, run_closed_loop
    from fyp.eval.report import write_json

    chosen = _split_methods(methods) or ["fyp", "random", "popular", "oracle"]
    with Progress(console=console) as bar:
        try:
            result = run_closed_loop(
                chosen,
                users=users,
                sessions_per_user=sessions,
                session_length=session_length,
                count=count,
                seed=seed,
                videos=videos,
                n_boot=bootstrap,
                progress=bar,
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    result["protocol"]["command"] = shlex.join(["fyp", *sys.argv[1:]])
    console.print(closed_loop_table(result))
    if json_out is not None:
        write_json(result, json_out)
        console.print(f"JSON: {json_out}")
