"""How what the learner learned reaches the serving processes: versioned updates through
a :class:`ModelChannel`.

An update (:class:`ModelUpdate`) is either a *delta* (the embedding rows and ANN item
vectors touched since the last publish, the ids removed, the dense weights if a step moved
them) or a *snapshot* (everything: a reader that holds nothing starts from it). Versions
count publishes, one by one: a delta of version v is relative to v - 1; a snapshot of
version v replaces whatever a reader holds. A reader asks for everything after the
version it holds (:meth:`ModelChannel.read_after`): the newest snapshot if it is behind
that, then the deltas after it in order.

Updates travel as bytes in the ``.npz`` format (numpy arrays; ids as unicode arrays; read
with ``allow_pickle=False``, so a file can hold nothing but data), which any channel can
store: :class:`FileModelChannel` here keeps them as files in the data dir (the embedded
deployment: one machine), :class:`fyp.model.redis_channel.RedisModelChannel` the same
bytes under keys of a Redis server (several machines). :func:`open_channel` chooses by
URL (``model.channel``).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fyp.model.embeddings import TableChanges

__all__ = [
    "FileModelChannel",
    "IndexChanges",
    "ModelChannel",
    "ModelUpdate",
    "check_channel_url",
    "decode",
    "encode",
    "open_channel",
]

F32 = npt.NDArray[np.float32]
CHANNEL_DIR = "models"  # under the data dir
_NAME = re.compile(r"^(snapshot|delta)-(\d{12})\.npz$")
_META = ("version", "full", "published_ms", "offset", "ranker_examples", "retrieval_positives")


@dataclass(frozen=True)
class IndexChanges:
    """ANN item vectors to set (``ids``, ``vectors``) and ids to remove; ``recluster``:
    the learner re-clustered its index's lists (a whole-catalog refresh: every vector
    moved), so a reader re-clusters its own after setting them."""

    ids: list[str] = field(default_factory=list)
    vectors: F32 = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    removed: list[str] = field(default_factory=list)
    recluster: bool = False


@dataclass(frozen=True)
class ModelUpdate:
    """One publish of the learner: see the module's doc."""

    version: int
    full: bool  # a snapshot
    published_ms: int  # wall clock when published (a reader's age and lag)
    offset: int  # the event-log offset the learner had applied
    ranker_examples: int  # examples the ranker has learned from (warm-up)
    retrieval_positives: int  # positives retrieval has learned from (warm-up)
    tables: dict[str, TableChanges]  # "ranker.user", "retrieval.video", ...
    index: IndexChanges
    dense: dict[str, F32] | None  # every dense parameter by name; None: unchanged

    def without(self, ids: Mapping[str, Collection[str]]) -> ModelUpdate:
        """This update with no trace of ``ids`` (table name -> ids; an erased user's):
        neither their rows nor their removal. (Each server drops an erased user's rows
        itself, when it sees their tombstone: a removal need not travel.)"""
        tables = dict(self.tables)
        for name, gone in ids.items():
            t = tables.get(name)
            if t is None or not gone:
                continue
            keep = [k for k, i in enumerate(t.ids) if i not in gone]
            removed = [i for i in t.removed if i not in gone]
            ids_kept = [t.ids[k] for k in keep]
            tables[name] = TableChanges(ids_kept, t.vectors[keep], removed, t.fallback)
        return replace(self, tables=tables)

    def holds(self, ids: Mapping[str, Collection[str]]) -> bool:
        """Whether any of these ids is in this update (a row, or a removal)."""
        for name, gone in ids.items():
            t = self.tables.get(name)
            if t is not None and not set(gone).isdisjoint([*t.ids, *t.removed]):
                return True
        return False


def _strs(values: list[str]) -> npt.NDArray[np.str_]:
    return np.array(values, dtype=np.str_).reshape(len(values))


def encode(update: ModelUpdate) -> bytes:
    """The update as ``.npz`` bytes."""
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "meta": np.array([int(getattr(update, k)) for k in _META], dtype=np.int64),
        "tables": _strs(list(update.tables)),
        "i.ids": _strs(update.index.ids),
        "i.vectors": update.index.vectors,
        "i.removed": _strs(update.index.removed),
        "i.recluster": np.array(update.index.recluster),
    }
    for k, t in enumerate(update.tables.values()):
        arrays[f"t{k}.ids"] = _strs(t.ids)
        arrays[f"t{k}.vectors"] = t.vectors
        arrays[f"t{k}.removed"] = _strs(t.removed)
        arrays[f"t{k}.fallback"] = t.fallback
    if update.dense is not None:
        arrays["dense"] = _strs(list(update.dense))
        for k, w in enumerate(update.dense.values()):
            arrays[f"d{k}"] = w
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def decode(data: bytes) -> ModelUpdate:
    """An update from :func:`encode`'s bytes (ValueError if they are not one)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = dict(zip(_META, z["meta"].tolist(), strict=True))
        tables = {
            str(name): TableChanges(
                z[f"t{k}.ids"].tolist(),
                z[f"t{k}.vectors"].astype(np.float32, copy=False),
                z[f"t{k}.removed"].tolist(),
                z[f"t{k}.fallback"].astype(np.float32, copy=False),
            )
            for k, name in enumerate(z["tables"].tolist())
        }
        dense = None
        if "dense" in z.files:
            dense = {str(n): z[f"d{k}"] for k, n in enumerate(z["dense"].tolist())}
        index = IndexChanges(
            z["i.ids"].tolist(),
            z["i.vectors"].astype(np.float32, copy=False),
            z["i.removed"].tolist(),
            bool(z["i.recluster"]),
        )
    return ModelUpdate(
        int(meta["version"]),
        bool(meta["full"]),
        int(meta["published_ms"]),
        int(meta["offset"]),
        int(meta["ranker_examples"]),
        int(meta["retrieval_positives"]),
        tables,
        index,
        dense,
    )


class ModelChannel(Protocol):
    """Where the learner publishes and serving reads: see the module's doc. One writer
    (the learner, or whoever holds its lock), any number of readers."""

    def publish(self, update: ModelUpdate) -> None:
        """Store ``update`` (its version one past :meth:`latest`); a snapshot supersedes
        everything before it, which the channel may then drop."""
        ...

    def latest(self) -> int:
        """The newest version published (0: none yet)."""
        ...

    def read_after(self, version: int) -> list[ModelUpdate]:
        """Everything a reader holding ``version`` needs, in order: the newest snapshot
        when ``version`` is older than it, then the deltas after (what is there now: a
        reader asks again later for more)."""
        ...

    def forget(self, ids: Mapping[str, Collection[str]]) -> int:
        """Rewrite every stored update without the rows of ``ids`` (table name -> ids;
        an erased user's): returns how many were rewritten."""
        ...

    def put_learner_status(self, status: bytes) -> None:
        """Keep the learner's status (JSON: :class:`fyp.learning.link.LearnerStatus`)
        where every reader of the channel finds it, if readers may be on other data
        dirs than the learner's; else nothing (they read its file)."""
        ...

    def learner_status(self) -> bytes | None:
        """The last status :meth:`put_learner_status` kept (None: none, or kept in the
        learner's data dir only)."""
        ...

    def close(self) -> None:
        """Let go of what reaching the channel holds (a server's connections)."""
        ...


class FileModelChannel:
    """A :class:`ModelChannel` as files in a directory: ``snapshot-<version>.npz`` and
    ``delta-<version>.npz``, each written to a temporary name and renamed into place (a
    reader never sees half a file). Publishing a snapshot deletes the files before it.
    Deltas are not fsynced (a reader on this machine reads them from the page cache, and
    after a power loss the learner publishes a snapshot at its start anyway); rewrites
    without an erased user's rows are, with the directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def _files(self) -> list[tuple[int, bool, Path]]:
        """(version, is a snapshot, path) of every update stored, oldest first."""
        out = []
        for name in os.listdir(self.directory):
            m = _NAME.match(name)
            if m is not None:
                out.append((int(m.group(2)), m.group(1) == "snapshot", self.directory / name))
        out.sort()
        return out

    def _write(self, path: Path, data: bytes, sync: bool) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def publish(self, update: ModelUpdate) -> None:
        kind = "snapshot" if update.full else "delta"
        self._write(self.directory / f"{kind}-{update.version:012d}.npz", encode(update), False)
        if update.full:
            for version, _, path in self._files():
                if version < update.version:
                    path.unlink(missing_ok=True)

    def latest(self) -> int:
        files = self._files()
        return files[-1][0] if files else 0

    def read_after(self, version: int) -> list[ModelUpdate]:
        files = self._files()
        snapshots = [f for f in files if f[1]]
        start = version
        wanted: list[Path] = []
        if snapshots and snapshots[-1][0] > version:
            start = snapshots[-1][0]
            wanted.append(snapshots[-1][2])
        wanted += [p for v, full, p in files if v > start and not full]
        out = []
        for path in wanted:
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # superseded by a snapshot meanwhile: next time
                break
            out.append(decode(data))
        return out

    def forget(self, ids: Mapping[str, Collection[str]]) -> int:
        n = 0
        for _, _, path in self._files():
            try:
                update = decode(path.read_bytes())
            except FileNotFoundError:
                continue
            if update.holds(ids):
                self._write(path, encode(update.without(ids)), True)
                n += 1
        for tmp in self.directory.glob("*.tmp"):  # a write a kill cut short may hold them
            tmp.unlink(missing_ok=True)
        return n

    def put_learner_status(self, status: bytes) -> None:
        return None  # (its readers share the learner's data dir, and its status file)

    def learner_status(self) -> bytes | None:
        return None

    def close(self) -> None:
        return None  # (every call opens and closes its own files)

    def status(self) -> dict[str, int]:
        files = self._files()
        return {
            "files": len(files),
            "bytes": sum(p.stat().st_size for _, _, p in files if p.exists()),
        }


def check_channel_url(url: str) -> str:
    """``url`` if it names a channel this engine has (a Redis server), else a ValueError
    saying what is wrong; nothing is opened."""
    from fyp.model.redis_channel import split_url

    split_url(url)
    return url


def open_channel(url: str | None, data_dir: Path) -> ModelChannel:
    """The model channel at ``url``: None, the files in ``data_dir`` (one machine);
    ``redis://host:port/db?prefix=p``, a Redis server shared by several."""
    if url is None:
        return FileModelChannel(data_dir / CHANNEL_DIR)
    from fyp.model.redis_channel import RedisModelChannel  # redis only when asked for

    return RedisModelChannel.from_url(url)
