"""``fyp``: one command, with subcommands for every role (serve, demo, import, ...)."""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from fyp.audit.commands import audit_app
from fyp.cluster.commands import cluster_app
from fyp.config import LOAD_GENERATOR_AUTH, Settings, load_settings
from fyp.eval.commands import eval_app
from fyp.events.commands import log_app
from fyp.privacy.commands import keys_app

app = typer.Typer(help="fyp: an open, self-hostable For You feed engine.", no_args_is_help=True)
import_app = typer.Typer(help="Load data from public datasets.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(eval_app, name="eval")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(log_app, name="log")
app.add_typer(cluster_app, name="cluster")
console = Console()

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the engine keeps its data.")
]
Host = Annotated[str | None, typer.Option(help="Address to bind (127.0.0.1: this machine only).")]
Port = Annotated[int | None, typer.Option(help="TCP port.")]
Region = Annotated[str | None, typer.Option(help="The region this deployment serves.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="A TOML settings file.")]
EventLogUrl = Annotated[
    str | None,
    typer.Option(
        "--event-log",
        help="Where the event log is: redis://host:port/db (shared by several processes; "
        "docs/cluster.md) or sqlite:///path. Default: events.db in the data dir.",
    ),
]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Where the catalog, moderation, users and impressions are: "
        "postgresql://user@host:port/db[?schema=NAME] (shared by several processes; "
        "docs/cluster.md). Default: SQLite files in the data dir.",
    ),
]

ModelChannelUrl = Annotated[
    str | None,
    typer.Option(
        "--model-channel",
        help="Where the learner publishes the models and servers read them: "
        "redis://host:port/db (servers on several machines; docs/cluster.md). "
        "Default: files in the data dir.",
    ),
]


def _settings(
    data_dir: Path | None,
    host: str | None = None,
    port: int | None = None,
    region: str | None = None,
    config: Path | None = None,
    event_log: str | None = None,
    store: str | None = None,
    model_channel: str | None = None,
) -> Settings:
    """The settings from the flags, the environment and the file; a value that is wrong
    (a URL of no backend, say) is said in a line each and the command exits 2."""
    try:
        return load_settings(
            config,
            {
                "data_dir": data_dir,
                "host": host,
                "port": port,
                "region": region,
                "event_log": event_log,
                "store": store,
                "model": {"channel": model_channel},
            },
        )
    except ValidationError as err:
        for e in err.errors():
            where = ".".join(str(part) for part in e["loc"])
            console.print(f"[red]error:[/red] {where}: {e['msg']}")
        raise typer.Exit(code=2) from None


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    region: Region = None,
    config: ConfigFile = None,
    event_log: EventLogUrl = None,
    store: StoreUrl = None,
    model_channel: ModelChannelUrl = None,
) -> None:
    """Run the HTTP API (feed, events, catalog) until interrupted; with the learned models
    on, also the learner process (``fyp learn``), supervised."""
    settings = _settings(data_dir, host, port, region, config, event_log, store, model_channel)
    _serve_api(settings, supervise_learner=True, reuse_port=False)


@app.command()
def api(
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    region: Region = None,
    config: ConfigFile = None,
    event_log: EventLogUrl = None,
    store: StoreUrl = None,
    model_channel: ModelChannelUrl = None,
    reuse_port: Annotated[
        bool,
        typer.Option(
            "--reuse-port",
            help="Bind with SO_REUSEPORT: several API processes on one port, the kernel "
            "sharing the connections among them (Linux).",
        ),
    ] = False,
    fd: Annotated[
        int | None,
        typer.Option(
            "--fd",
            min=0,
            help="Accept from this inherited listening socket instead of binding one (a "
            "parent's, shared by several API processes: fyp cluster up).",
        ),
    ] = None,
) -> None:
    """Run one API process, without a learner (run one with ``fyp learn``): one of
    several serving the same stores (docs/cluster.md; ``fyp cluster up``)."""
    settings = _settings(data_dir, host, port, region, config, event_log, store, model_channel)
    _serve_api(settings, supervise_learner=False, reuse_port=reuse_port, fd=fd)


def _serve_api(
    settings: Settings, supervise_learner: bool, reuse_port: bool, fd: int | None = None
) -> None:
    from fyp.api import create_app

    console.print(
        f"fyp serving {settings.data_dir} (region {settings.region}) on "
        f"http://{settings.host}:{settings.port} (docs: /docs)"
    )
    from fyp.engine import open_data_dir, serving_gc
    from fyp.privacy.pseudonym import SecretError
    from fyp.privacy.residency import DataDirError

    try:
        open_data_dir(settings)  # the wrong region's data, or no secret: say so, not a trace
    except (DataDirError, SecretError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    _reach_backends(settings)
    if settings.auth.required and not _has_keys(settings):
        console.print(
            "No API keys yet: every request but /healthz gets a 401. Make one with\n"
            f"  fyp keys create --data-dir {settings.data_dir} --scopes all"
        )
    serving_gc()
    asgi = create_app(settings, supervise_learner=supervise_learner)
    if fd is not None:
        # The parent's socket, listening already: connections queue in it until one of
        # the processes sharing it accepts them, so one killed loses only those it had
        # accepted (with SO_REUSEPORT, each process has a queue of its own, lost with it).
        shared = socket.socket(fileno=fd)
        server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False))
        server.run(sockets=[shared])
        return
    if not reuse_port:
        uvicorn.run(
            asgi, host=settings.host, port=settings.port, log_level="warning", access_log=False
        )
        return
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    server = uvicorn.Server(uvicorn.Config(asgi, log_level="warning", access_log=False))
    server.run(sockets=[sock])


@app.command()
def train(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    event_log: EventLogUrl = None,
    store: StoreUrl = None,
    model_channel: ModelChannelUrl = None,
) -> None:
    """Replay the event log through the learning loop (the learned models too, when
    enabled) and write a checkpoint, so the next start replays nothing: for example after
    ``fyp import kuairand``. Where a learner process trains the models (the default),
    the learner's checkpoint and published snapshot, and the server's checkpoint."""
    from fyp.engine import Engine, serving_role

    settings = _settings(
        data_dir, config=config, event_log=event_log, store=store, model_channel=model_channel
    )
    started = time.perf_counter()
    split = serving_role(settings) == "serving"
    with console.status("replaying the event log"):
        if split:
            from fyp.learning.link import learner_lock

            with learner_lock(settings.data_dir, wait=False) as free:
                if not free:
                    console.print("[red]error:[/red] a learner runs on this data dir")
                    raise typer.Exit(code=2)
                _train_learner(settings)
        engine = Engine.open(settings, role=serving_role(settings))
    try:
        replayed = time.perf_counter() - started
        size = engine.checkpoints.write()
        table = Table(title=f"fyp train: {settings.data_dir}")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("events applied (log offset)", f"{engine.state.applied_offset:,}")
        table.add_row("replay (s)", f"{replayed:.1f}")
        table.add_row("users", f"{len(engine.state.users):,}")
        models = engine.models
        if models is not None:
            table.add_row("ranker examples", f"{models.ranker.examples_seen:,}")
            table.add_row("ranker warm", str(models.ranker.warm))
            table.add_row("retrieval positives", f"{models.retrieval.positives_seen:,}")
            table.add_row("retrieval warm", str(models.retrieval.warm))
        table.add_row("checkpoint (MB)", f"{size / 1e6:.1f}")
        console.print(table)
    finally:
        engine.close()


def _train_learner(settings: Settings) -> None:
    """The learner's replay, checkpoint and snapshot (the caller holds its lock)."""
    from fyp.learning.learner import Learner

    learner = Learner(settings)  # (it publishes a snapshot once caught up)
    try:
        learner.engine.checkpoints.write()
        models = learner.models
        console.print(
            f"learner: {models.ranker.examples_seen:,} ranker examples, "
            f"{models.retrieval.positives_seen:,} retrieval positives, model version "
            f"{learner.publisher.version}"
        )
    finally:
        learner.close()


def _reach_backends(settings: Settings) -> None:
    """Open and close the event log and the stores where their URLs name servers: one
    that does not answer (or refuses the URL's options) is said in a line, before a
    server starts, rather than as the trace of a failed start-up."""
    if settings.event_log is None and settings.store is None:
        return
    from fyp.events.backends import open_event_log
    from fyp.storage.backends import open_stores

    try:
        open_event_log(settings.event_log, settings.data_dir).close()
        stores = open_stores(settings.store, settings.data_dir)
    except (OSError, ValueError, RuntimeError) as err:  # (unreachable; durability refused)
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    for store in (stores.catalog, stores.moderation, stores.users, stores.impressions):
        store.close()


@app.command()
def learn(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    event_log: EventLogUrl = None,
    store: StoreUrl = None,
    model_channel: ModelChannelUrl = None,
) -> None:
    """Run the learner alone until interrupted: it trains the learned models from the
    event log and publishes them to the servers of this data dir (``fyp serve`` starts
    one itself)."""
    from fyp.engine import open_data_dir
    from fyp.learning.learner import main

    settings = _settings(
        data_dir, config=config, event_log=event_log, store=store, model_channel=model_channel
    )
    if not settings.model.enabled:
        console.print("[red]error:[/red] the learned models are off ([model] enabled = false)")
        raise typer.Exit(code=2)
    open_data_dir(settings)
    console.print(f"fyp learner on {settings.data_dir} (pid {os.getpid()})")
    main(settings, supervised=False)


@import_app.command("kuairand")
def import_kuairand_cmd(
    source: Annotated[Path, typer.Argument(help="Folder with KuaiRand log and feature files.")],
    data_dir: DataDir = None,
    until: Annotated[
        str | None, typer.Option(help="Import log rows before this date (YYYY-MM-DD, UTC) only.")
    ] = None,
    config: ConfigFile = None,
) -> None:
    """Load KuaiRand videos (with their type, upload type, music type and orientation as
    attributes), users (their features file as attributes) and logs: each log row
    becomes the impression it was and the events that followed it, through the same
    ingestion as the API."""
    from fyp.engine import Engine
    from fyp.eval.kuairand import import_kuairand

    settings = _settings(data_dir, config=config)
    until_ms = None
    if until is not None:
        until_ms = int(datetime.strptime(until, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
    engine = Engine.open(settings)
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("importing log rows", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = import_kuairand(engine, source, until_ms=until_ms, progress=progress)
    finally:
        engine.close()
    table = Table(title=f"KuaiRand import into {settings.data_dir}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name in (
        "videos",
        "videos_skipped",
        "users_with_attributes",
        "attributes_refused",
        "rows",
        "events_accepted",
        "events_duplicate",
        "events_rejected",
    ):
        table.add_row(name, f"{getattr(summary, name):,}")
    for reason, n in sorted(summary.rejected_reasons.items(), key=lambda kv: -kv[1])[:5]:
        table.add_row(f"  rejected: {reason[:70]}", f"{n:,}")
    console.print(table)
    console.print("KuaiRand: Gao et al., CIKM 2022, CC BY-SA 4.0.")


def _has_keys(settings: Settings) -> bool:
    from fyp.storage.backends import has_keys_store, open_key_store

    if not has_keys_store(settings.store, settings.data_dir):
        return False
    keys = open_key_store(settings.store, settings.data_dir)
    try:
        return any(k.revoked_at is None for k in keys.list())
    finally:
        keys.close()


def _demo_key(settings: Settings) -> str:
    """A fresh key with every scope for this demo run (the last run's are revoked, so
    demo keys do not pile up); recorded in the audit log like any other."""
    from fyp.privacy.commands import create_audited, revoke_audited
    from fyp.privacy.keys import SCOPES
    from fyp.storage.backends import open_audit_log, open_key_store

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keys = open_key_store(settings.store, settings.data_dir)
    audit = open_audit_log(settings.store, settings.data_dir)
    try:
        for old in keys.list():
            if old.label == "demo" and old.revoked_at is None:
                revoke_audited(keys, audit, old.key_id, "demo")
        return create_audited(keys, audit, SCOPES, None, "demo", "demo")[1]
    finally:
        audit.close()
        keys.close()


PLAYER_TOKEN_S = 3600  # the demo player's token (see demo)


class _BackgroundServer:
    """uvicorn in a thread of this process, for the demo."""

    def __init__(self, settings: Settings) -> None:
        from fyp.api import create_app

        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout_s: float = 60.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise typer.Exit(code=1)
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@app.command()
def demo(
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    users: Annotated[int, typer.Option(help="Simulated users.")] = 200,
    requests: Annotated[int, typer.Option(help="Feed requests the audience makes.")] = 3000,
    seed: Annotated[int, typer.Option(help="Seed of the world and the audience.")] = 0,
    stay: Annotated[bool, typer.Option(help="Keep serving after the audience is done.")] = True,
) -> None:
    """Start the engine, seed a synthetic world if the data dir is empty, let simulated
    users watch through the HTTP API, and show feed quality as the engine learns."""
    import httpx

    from fyp.engine import open_data_dir, serving_gc
    from fyp.eval.simulate import (
        AudienceReport,
        EngineFeed,
        RandomFeed,
        RequestStats,
        build_world,
        register_users,
        run_audience,
        seed_catalog,
        seed_trust_and_safety,
    )
    from fyp.privacy.keys import bearer
    from fyp.privacy.pseudonym import SecretError
    from fyp.privacy.residency import DataDirError

    settings = _settings(data_dir or Path(".fyp-demo"), host, port)
    # Simulated users act at the machine's pace, through one key: far past a person's
    # rate limit and a deployment's key's (the limits are lifted for this run only).
    settings = settings.model_copy(
        update={"auth": settings.auth.model_copy(update=LOAD_GENERATOR_AUTH)}
    )
    try:
        open_data_dir(settings)
    except (DataDirError, SecretError) as err:
        console.print(f"[red]error:[/red] {err}\n(for the demo: remove {settings.data_dir})")
        raise typer.Exit(code=1) from None
    token = _demo_key(settings)
    serving_gc()
    server = _BackgroundServer(settings)
    server.start()
    base = f"http://{settings.host}:{settings.port}"
    world = build_world(seed=seed, n_users=users)
    auth = bearer(token)
    with httpx.Client(base_url=base, timeout=30, headers=auth) as client:
        if client.get("/healthz").json()["videos"] == 0:
            n = seed_catalog(client, world)
            moderated, profiles = seed_trust_and_safety(client, world, seed)
            console.print(
                f"Seeded a synthetic world: {n:,} videos ({moderated} with a moderation "
                f"decision), {users} users ({profiles} profiles with age bands)."
            )
        else:
            register_users(client, world)  # a larger audience than last time: the new ones
        # The baseline: the same audience (same seed, same number of requests) served
        # in random order, without the engine; both are compared on their last 1,000.
        baseline = run_audience(
            world, RandomFeed(world, seed), client=None, requests=requests, seed=seed + 1
        )
        window: deque[RequestStats] = deque(maxlen=300)

        def table(done: int) -> Table:
            t = Table(title=f"fyp demo — {base} (docs: {base}/docs)")
            for col in (
                "requests",
                "watch ratio (last 300)",
                "random feed",
                "like rate",
                "creators / page",
            ):
                t.add_column(col, justify="right")
            recent = AudienceReport.from_stats("engine", 0, list(window))
            t.add_row(
                f"{done:,}",
                f"{recent.mean_watch_ratio:.3f}",
                f"{baseline.last_window_watch_ratio():.3f}",
                f"{recent.like_rate:.3f}",
                f"{recent.distinct_creators_per_page:.1f}",
            )
            return t

        with Live(table(0), console=console, refresh_per_second=4) as live:

            def on_request(s: RequestStats) -> None:
                window.append(s)
                if s.index % 25 == 0:
                    live.update(table(s.index + 1))

            report = run_audience(
                world,
                EngineFeed(client),
                client=client,
                requests=requests,
                seed=seed + 1,
                on_request=on_request,
            )
            live.update(table(report.requests))
        items = client.get("/v1/feed", params={"user_id": "u0001", "count": 1}).json()["items"]
        # The player gets a token of u0001's, not the key: it can act for that user only.
        # An hour, more than the default, so that the address still works when opened a
        # while after it is printed; once open, the page renews it.
        player = client.post("/v1/tokens", json={"user_id": "u0001", "ttl_s": PLAYER_TOKEN_S})
        player.raise_for_status()
    console.print()
    console.print(
        f"Mean watch ratio, last 1,000 requests: engine {report.last_window_watch_ratio():.3f} "
        f"vs random order {baseline.last_window_watch_ratio():.3f}."
    )
    say = functools.partial(console.print, soft_wrap=True)  # commands to copy, unwrapped
    until = time.strftime("%H:%M", time.localtime(player.json()["expires_at"] / 1000))
    say(
        f"Player:  {base}/#token={player.json()['token']}\n"
        f"         (open it by {until}: scroll, watch, like; it acts for u0001 only)"
    )
    say(f"Console: {base}/console#key={token}")
    say(f"API key (every scope, this run only): {token}")
    say(f"Key:     export FYP_KEY={token}")
    h = '-H "Authorization: Bearer $FYP_KEY"'
    say(f"Feed:    curl {h} '{base}/v1/feed?user_id=u0001&count=5'")
    if items:
        say(f"Why:     curl {h} '{base}/v1/users/u0001/why/{items[0]['video_id']}'")
    say(
        f"Controls: curl {h} -X POST {base}/v1/users/u0001/controls "
        f"-H 'content-type: application/json' -d '{{\"personalized\": false}}'"
    )
    say(f"Export:  curl {h} '{base}/v1/users/u0001/export'")
    say(
        f"Token:   curl {h} -X POST {base}/v1/tokens -H 'content-type: application/json' "
        '-d \'{"user_id": "u0001"}\'   (for a client of u0001\'s: what the player holds)'
    )
    say(f"Erase:   curl {h} -X DELETE '{base}/v1/users/u0001'")
    say(
        f"Audit:   .venv/bin/fyp audit report --data-dir {settings.data_dir} --out audit.html\n"
        f"         .venv/bin/fyp audit verify --data-dir {settings.data_dir}"
    )
    say(f"Metrics: curl {h} '{base}/metrics'")
    say(f"API:     {base}/docs   Data: {settings.data_dir}")
    if not stay:
        server.stop()
        return
    console.print("Serving; Ctrl-C to stop.")
    try:
        while server.thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        server.stop()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
