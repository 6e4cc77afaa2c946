"""``fyp cluster up``: a local cluster on one machine — N API processes (``fyp api``)
accepting from one listening socket it opens and they inherit (``--fd``), and a learner
(``fyp learn``) where the learned models are on — over a Redis and a PostgreSQL already
running. See docs/cluster.md.

Each API process has a data dir of its own (``ROOT/api-<i>``: its checkpoint); what they
must share is shared: the stores (the API keys and the audit log among them) and the
event log (the URLs), and the pseudonym secret (``ROOT/pseudonym.secret``, through
``FYP_SECRET_FILE``). A key made or revoked with ``fyp keys ... --store URL`` holds in
every process within the key cache's recheck time. A process that exits is started
again; Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console

from fyp.config import load_settings

cluster_app = typer.Typer(help="A local cluster on one machine.", no_args_is_help=True)
console = Console()
FYP = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "fyp" else None
SECRET_FILE = "pseudonym.secret"
RESTART_DELAY_S = 1.0
LISTEN_BACKLOG = 2048  # (uvicorn's default)
RATE_LIMITS_SOCKET = "ratelimits.sock"
_SOCKET_PATH_MAX = 100  # (a unix socket's path: 107 bytes at most on Linux)
_REDIS_START_S = 10.0
# The caller's FYP_* variables a child is not given: those up sets for each itself (or
# passes as flags, which would win anyway), and the learner supervisor's own.
_NOT_INHERITED = frozenset(
    {
        "FYP_DATA_DIR",
        "FYP_HOST",
        "FYP_PORT",
        "FYP_EVENT_LOG",
        "FYP_STORE",
        "FYP_SECRET_FILE",
        "FYP_LEARNER_SETTINGS",
        "FYP_LEARNER_PARENT",
    }
)


# Resolved here, not in a child between fork and exec (dlopen takes the loader's lock).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _stopped_with_parent() -> None:
    """In a child before its exec: SIGTERM when ``fyp cluster up`` dies, however it dies
    (killed with SIGKILL, its children would go on holding the port, unsupervised)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _fyp() -> list[str]:
    """How to run fyp again: the same entry point, or the module under this Python."""
    return [str(FYP)] if FYP is not None else [sys.executable, "-m", "fyp.cli"]


class Child:
    """One process of the cluster, its output appended to ``log``."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log: Path,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.name, self.argv, self.env, self.pass_fds = name, argv, env, pass_fds
        self._log: IO[bytes] = log.open("ab")
        self.starts = 0
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        return subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=self.pass_fds,
            preexec_fn=_stopped_with_parent if _prctl is not None else None,
        )

    def check(self) -> None:
        """Start it again if it exited (it resumes from its checkpoint)."""
        code = self.proc.poll()
        if code is not None:
            console.print(f"{self.name} exited ({code}); starting it again")
            time.sleep(RESTART_DELAY_S)
            self.proc = self._start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def listen(host: str, port: int) -> socket.socket:
    """The cluster's listening socket, inheritable by the API processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()  # (an address in use: not left open until garbage collection)
        raise
    return sock


def child_env(
    environ: Mapping[str, str],
    root: Path,
    event_log: str,
    store: str,
    model_channel: str | None,
) -> dict[str, str]:
    """The environment of the cluster's processes: the caller's, its ``FYP_*`` settings
    included, with the shared URLs and the secret set (see :data:`_NOT_INHERITED`)."""
    env = {k: v for k, v in environ.items() if k not in _NOT_INHERITED}
    env |= {"FYP_EVENT_LOG": event_log, "FYP_STORE": store}
    env["FYP_SECRET_FILE"] = str(root / SECRET_FILE)
    if model_channel is not None:
        env["FYP_MODEL_CHANNEL"] = model_channel
    return env


def rate_limits_socket(root: Path) -> Path:
    """Where the buckets' server listens: in the cluster's directory, or (a path too
    long for a unix socket) in a directory of its own under the system's temp dir."""
    path = root / RATE_LIMITS_SOCKET
    if len(os.fsencode(path)) <= _SOCKET_PATH_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix="fyp-cluster-")) / RATE_LIMITS_SOCKET


def rate_limits_server_argv(binary: str, sock: Path) -> list[str]:
    """A redis-server for soft state only: on a unix socket (no TCP port), neither an AOF
    nor snapshots (the buckets lost come back full), its own process so that no fsync of
    the event log's server delays a bucket's answer."""
    argv = [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(sock.parent)]
    return argv


def wait_for_socket(sock: Path, child: Child, timeout_s: float = _REDIS_START_S) -> None:
    """Until the buckets' server answers on ``sock`` (RuntimeError if it exited or did
    not answer in time)."""
    import redis

    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError):
                if child.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the rate limits' redis-server did not start on {sock}"
                    ) from None
                time.sleep(0.05)
    finally:
        client.close()


def _stop_all(
    children: list[Child],
    buckets: Child | None,
    listening: socket.socket | None,
    sock_dir: Path | None,
) -> None:
    """Stop the cluster's processes in order (the buckets' server last), close its
    socket and remove a directory made for the buckets' socket."""
    for child in children:
        child.stop()
    if buckets is not None and buckets not in children:
        buckets.stop()
    if listening is not None:
        listening.close()
    if sock_dir is not None:
        shutil.rmtree(sock_dir, ignore_errors=True)


def prepare(root: Path, n_api: int) -> list[Path]:
    """The cluster's directory and a data dir per API process in it (made if absent)."""
    dirs = [root / f"api-{i}" for i in range(n_api)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


@cluster_app.command("up")
def up(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="The cluster's directory (made if absent).")
    ],
    event_log: Annotated[
        str, typer.Option("--event-log", help="The shared event log: redis://host:port/db.")
    ],
    store: Annotated[
        str, typer.Option("--store", help="The shared stores: postgresql://user@host/db.")
    ],
    api: Annotated[int, typer.Option("--api", min=1, help="API processes.")] = 2,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port every API process shares.")] = 8000,
    model_channel: Annotated[
        str | None,
        typer.Option("--model-channel", help="redis://…: needed with the learned models on."),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A TOML settings file.")] = None,
) -> None:
    """Start N API processes on one port and, with the learned models on, a learner;
    keep them running until interrupted."""
    root = data_dir.resolve()
    env = child_env(os.environ, root, event_log, store, model_channel)
    if not event_log.startswith(("redis://", "rediss://", "unix://")):
        raise typer.BadParameter("the API processes share the event log: give a redis:// URL")
    settings = load_settings(config, {"data_dir": root / "api-0"}, environ=env)
    models = settings.model.enabled and settings.model.learner == "process"
    if models and settings.model.channel is None:
        raise typer.BadParameter(
            "with the learned models on, the API processes read them from one channel: "
            "give --model-channel redis://…"
        )
    dirs = prepare(root, api)
    extra = [] if config is None else ["--config", str(config.resolve())]
    # The buckets on a server of their own, unless the settings say where.
    buckets: Child | None = None
    sock_dir: Path | None = None  # a directory made for the socket, removed at the end
    redis_server = shutil.which("redis-server")
    if settings.auth.rate_limits is None and redis_server is not None:
        sock = rate_limits_socket(root)
        sock_dir = None if sock.parent == root else sock.parent
        sock.unlink(missing_ok=True)  # (a server killed with the cluster leaves it)
        buckets = Child(
            "rate limits' redis-server",
            rate_limits_server_argv(redis_server, sock),
            env,
            root / "ratelimits.log",
        )
        env = env | {"FYP_RATE_LIMITS": f"unix://{sock}"}
    elif settings.auth.rate_limits is None:
        console.print(
            "redis-server is not installed here: the rate limits' buckets are on the "
            "event log's server"
        )
    children: list[Child] = []
    listening: socket.socket | None = None
    try:  # a start that fails part way stops what it started (the buckets' server too)
        if buckets is not None:
            wait_for_socket(sock, buckets)
        # One socket, held here for the cluster's life, from which every API process
        # accepts (not one each with SO_REUSEPORT: there the kernel queues each
        # connection on one process's socket, and those queued on a process killed are
        # reset with it).
        listening = listen(host, port)
        fd = listening.fileno()
        bind = ["--host", host, "--port", str(port), "--fd", str(fd)]
        for i, d in enumerate(dirs):
            children.append(
                Child(
                    f"api-{i}",
                    [*_fyp(), "api", "--data-dir", str(d), *bind, *extra],
                    env,
                    root / f"api-{i}.log",
                    pass_fds=(fd,),
                )
            )
        if models:  # (beside api-0: the learner's lock and status are in its data dir)
            children.append(
                Child(
                    "learner",
                    [*_fyp(), "learn", "--data-dir", str(dirs[0]), *extra],
                    env,
                    root / "learner.log",
                )
            )
    except BaseException:
        _stop_all(children, buckets, listening, sock_dir)
        raise
    if buckets is not None:  # (stopped last: the API processes use it to the end)
        children.append(buckets)
    console.print(
        f"fyp cluster: {api} API processes on http://{host}:{port}"
        + (" and a learner" if models else "")
        + ("" if buckets is None else "; the rate limits on a redis-server of their own")
        + f"; logs in {root}; make a key with\n"
        f"  fyp keys create --store '{store}' --scopes all"
    )
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        while not stopping:
            time.sleep(0.5)
            for child in children:
                child.check()
    except KeyboardInterrupt:
        pass
    finally:
        _stop_all(children, buckets, listening, sock_dir)
