"""ItemIndex: recall against exact search, incremental upserts and removals, checkpoints."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from fyp.model import ann
from fyp.model.ann import ItemIndex

DIM = 32


def clustered(n: int, seed: int, n_topics: int = 64) -> np.ndarray:
    """Unnormalised vectors from a mixture of Gaussians (like two-tower item vectors);
    the topics are the same whatever ``seed`` (which draws the points)."""
    centers = np.random.default_rng(0).standard_normal((n_topics, DIM)) / np.sqrt(DIM)
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_topics, size=n)
    noise = rng.standard_normal((n, DIM)) * (0.6 / np.sqrt(DIM))
    norm = rng.lognormal(0.0, 0.35, size=(n, 1))
    return ((centers[topic] + noise) * norm).astype(np.float32)


def ids_of(n: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def exact_ids(x: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> list[set[str]]:
    scores = q @ x.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return [{ids[i] for i in row} for row in top]


def ivf_index(**kw: int) -> ItemIndex:
    """An index that uses its IVF at any size that can train it."""
    return ItemIndex(DIM, exact_below=0, **kw)


@pytest.fixture(scope="module")
def big() -> tuple[list[str], np.ndarray, np.ndarray]:
    x = clustered(12_000, seed=1)
    q = clustered(200, seed=2)
    return ids_of(len(x)), x, q


def test_recall_at_100_against_exact(big: tuple[list[str], np.ndarray, np.ndarray]) -> None:
    ids, x, q = big
    index = ivf_index()
    index.upsert(ids, x)
    assert index.is_approximate
    found, scores = index.search(q, 100)
    truth = exact_ids(x, ids, q, 100)
    recall = np.mean([len(set(f) & t) / 100 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall
    # Scores are the exact inner products, best first.
    pos = {v: i for i, v in enumerate(ids)}
    for r in range(5):
        expected = x[[pos[v] for v in found[r]]] @ q[r]
        np.testing.assert_allclose(scores[r], expected, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(scores[r]) <= 0)


def test_recall_holds_after_incremental_updates(
    big: tuple[list[str], np.ndarray, np.ndarray],
) -> None:
    ids, x, q = big
    x = x.copy()
    index = ivf_index()
    index.upsert(ids, x)
    rng = np.random.default_rng(3)
    fresh = clustered(5 * 600, seed=4)
    for r in range(5):  # 5 rounds replacing 5% each
        rows = rng.choice(len(ids), size=600, replace=False)
        x[rows] = fresh[r * 600 : (r + 1) * 600]
        index.upsert([ids[i] for i in rows], x[rows])
    assert len(index) == len(ids)
    found, _ = index.search(q, 100)
    truth = exact_ids(x, ids, q, 100)
    recall = np.mean([len(set(f) & t) / 100 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall


@pytest.mark.parametrize("exact_below", [0, 10**9], ids=["ivf", "exact"])
def test_upsert_moves_a_vector(exact_below: int) -> None:
    x = clustered(3_000, seed=5)
    ids = ids_of(len(x))
    index = ItemIndex(DIM, exact_below=exact_below)
    index.upsert(ids, x)
    assert index.is_approximate == (exact_below == 0)
    # Two places no other vector comes near (norms here are about 1).
    u = np.linalg.svd(x, full_matrices=False)[2]
    old_place, new_place = 6.0 * u[0], -6.0 * u[1]
    index.upsert(["v7"], old_place[None, :])
    assert index.search(old_place, 1)[0] == [["v7"]]
    index.upsert(["v7"], new_place[None, :])
    assert len(index) == len(ids)
    top, scores = index.search(new_place, 1)
    assert top == [["v7"]]
    assert scores[0][0] == pytest.approx(float(new_place @ new_place), rel=1e-5)
    assert "v7" not in index.search(old_place, 10)[0][0]
    np.testing.assert_allclose(index.vector("v7"), new_place, rtol=1e-6)


@pytest.mark.parametrize("exact_below", [0, 10**9], ids=["ivf", "exact"])
def test_remove_and_reuse(exact_below: int) -> None:
    x = clustered(2_000, seed=6)
    ids = ids_of(len(x))
    index = ItemIndex(DIM, exact_below=exact_below)
    index.upsert(ids, x)
    gone = ids[:500]
    assert index.remove([*gone, "unknown"]) == 500
    assert index.remove(gone) == 0
    assert len(index) == 1_500
    assert "v0" not in index and "v600" in index
    found, _ = index.search(x[:50], 100)
    assert not set().union(*map(set, found)) & set(gone)
    # Every remaining id is reachable, and only once.
    everything, _ = index.search(x[600], 5_000)
    assert sorted(everything[0]) == sorted(ids[500:])
    # Removed ids can come back (into freed slots) with new vectors.
    far = 6.0 * np.linalg.svd(x, full_matrices=False)[2][:2]
    index.upsert(["v0", "new"], far)
    assert len(index) == 1_502 and "v0" in index and "new" in index
    assert index.search(far, 1)[0] == [["v0"], ["new"]]


def test_ids_round_trip_and_duplicates_in_one_call() -> None:
    x = clustered(100, seed=7)
    names = [f"video-{i}-ü" for i in range(100)]
    index = ItemIndex(DIM)
    index.upsert(names, x)
    assert sorted(index.ids()) == sorted(names)
    found, _ = index.search(x, 1)
    best = np.argmax(x @ x.T, axis=1)
    assert [row[0] for row in found] == [names[i] for i in best]
    index.upsert(["a", "a"], x[:2])  # the last one wins
    assert len(index) == 101
    np.testing.assert_array_equal(index.vector("a"), x[1])


def test_empty_index_and_edge_cases() -> None:
    index = ItemIndex(DIM)
    assert len(index) == 0 and "x" not in index
    found, scores = index.search(np.ones(DIM, np.float32), 10)
    assert found == [[]] and len(scores[0]) == 0
    found, _ = index.search(np.ones((3, DIM), np.float32), 10)
    assert found == [[], [], []]
    index.upsert([], np.zeros((0, DIM), np.float32))
    assert len(index) == 0
    with pytest.raises(ValueError):
        index.upsert(["a"], np.zeros((1, DIM + 1), np.float32))
    with pytest.raises(ValueError):
        index.upsert(["a", "b"], np.zeros((1, DIM), np.float32))
    with pytest.raises(ValueError):
        index.upsert(["a"], np.full((1, DIM), np.nan, np.float32))
    with pytest.raises(ValueError):
        index.search(np.ones(DIM + 1, np.float32), 1)


@pytest.mark.parametrize("exact_below", [0, 10**9], ids=["ivf", "exact"])
def test_k_larger_than_index(exact_below: int) -> None:
    x = clustered(30, seed=8)
    index = ItemIndex(DIM, exact_below=exact_below)
    index.upsert(ids_of(30), x)
    found, scores = index.search(x[:2], 100)
    assert [len(r) for r in found] == [30, 30]
    assert sorted(found[0]) == sorted(ids_of(30))
    assert np.all(np.diff(scores[0]) <= 0)
    assert index.search(x[0], 0)[0] == [[]]


def test_switches_to_graph_at_threshold_and_back() -> None:
    x = clustered(1_000, seed=9)
    ids = ids_of(1_000)
    index = ItemIndex(DIM, exact_below=600)
    index.upsert(ids[:500], x[:500])
    assert not index.is_approximate
    index.upsert(ids[500:], x[500:])
    assert index.is_approximate
    index.remove(ids[:400])  # 600 left: above the hysteresis floor
    assert index.is_approximate
    index.remove(ids[400:800])  # 200 left
    assert not index.is_approximate
    assert sorted(index.search(x[900], 1_000)[0][0]) == sorted(ids[800:])


@pytest.mark.parametrize("include_index", [True, False])
def test_state_dict_round_trip(include_index: bool) -> None:
    x = clustered(2_000, seed=10)
    ids = ids_of(2_000)
    index = ItemIndex(DIM, exact_below=1_000)
    index.upsert(ids, x)
    index.remove(ids[:10])
    state = index.state_dict(include_index=include_index)
    restored = ItemIndex.from_state_dict(state)
    assert len(restored) == len(index) and restored.is_approximate
    q = clustered(20, seed=11)
    a, _ = index.search(q, 50)
    b, _ = restored.search(q, 50)
    overlap = np.mean([len(set(r) & set(s)) / 50 for r, s in zip(a, b, strict=True)])
    assert overlap >= (1.0 if include_index else 0.9)
    # The restored index keeps working incrementally.
    restored.upsert(["v0"], x[5:6])
    assert "v0" in restored and len(restored) == len(index) + 1
    small = ItemIndex(DIM)
    small.upsert(ids[:5], x[:5])
    again = ItemIndex.from_state_dict(small.state_dict())
    assert sorted(again.ids()) == sorted(ids[:5]) and not again.is_approximate


def test_cosine_metric_normalises() -> None:
    index = ItemIndex(2, metric="cos")
    index.upsert(["big", "aligned"], np.array([[10.0, 1.0], [1.0, 0.0]], np.float32))
    found, scores = index.search(np.array([1.0, 0.0], np.float32), 2)
    assert found == [["aligned", "big"]]
    assert scores[0][0] == pytest.approx(1.0)


def test_ivf_is_retrained_as_it_grows_and_churns() -> None:
    x = clustered(8_000, seed=12)
    ids = ids_of(8_000)
    index = ItemIndex(DIM, exact_below=1_000)
    index.upsert(ids[:1_000], x[:1_000])
    assert index.is_approximate
    first = index.state_dict()["trained_size"]
    index.upsert(ids[1_000:1_900], x[1_000:1_900])  # incremental adds
    assert index.state_dict()["trained_size"] == first == 1_000
    index.upsert(ids[1_900:2_000], x[1_900:2_000])  # doubled: re-clustered
    assert index.state_dict()["trained_size"] == 2_000
    index.upsert(ids[2_000:], x[2_000:])
    assert index.state_dict()["trained_size"] == 8_000
    fresh = clustered(8_000, seed=13)
    index.upsert(ids, fresh)  # every vector moved (a retrained model): re-clustered
    state = index.state_dict()
    assert state["trained_size"] == 8_000 and state["changes"] == 0
    q = clustered(50, seed=14)
    found, _ = index.search(q, 100)
    truth = exact_ids(fresh, ids, q, 100)
    recall = np.mean([len(set(f) & t) / 100 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall


class _HeldBuilds:
    """Background builds that wait for ``release`` (so a test makes its changes while one
    is certainly running)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.started = 0
        real = ann._build_ivf

        def held(*args: Any) -> Any:
            self.started += 1
            assert self.release.wait(10), "the test never released the build"
            return real(*args)

        monkeypatch.setattr(ann, "_build_ivf", held)


def test_background_build_keeps_changes_made_while_it_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered(6_000, seed=20)
    ids = ids_of(len(x))
    held = _HeldBuilds(monkeypatch)
    index = ItemIndex(DIM, exact_below=2_000, background=True)
    index.upsert(ids[:2_000], x[:2_000])  # reaches the threshold: a build starts
    assert index.building and held.started == 1
    assert not index.is_approximate  # exact search meanwhile, and it answers
    assert index.search(x[5], 1)[0] == [["v5"]]
    # While it runs: new ids, a moved vector, removals.
    index.upsert(ids[2_000:3_000], x[2_000:3_000])
    u = np.linalg.svd(x, full_matrices=False)[2]
    far = 6.0 * u[0]
    index.upsert(["v7"], far[None, :])
    assert index.remove(ids[100:200]) == 100
    assert held.started == 1  # no second build while one runs (none fell due)
    held.release.set()
    index.settle()
    assert index.is_approximate and not index.building
    current = x[:3_000].copy()
    current[7] = far
    keep = [i for i in range(3_000) if not 100 <= i < 200]
    assert index.search(far, 1)[0] == [["v7"]]
    everything, _ = index.search(x[2_500], 5_000)
    assert sorted(everything[0]) == sorted(ids[i] for i in keep)  # each once, none lost
    q = clustered(50, seed=21)
    found, _ = index.search(q, 100)
    truth = exact_ids(current[keep], [ids[i] for i in keep], q, 100)
    recall = np.mean([len(set(f) & t) / 100 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall


def test_background_builds_leave_the_index_built_in_place() -> None:
    """The same changes, re-clustered in place or in the background: once settled, the
    same index (same trigger points, same lists, same answers)."""
    x = clustered(8_000, seed=22)
    moved = clustered(8_000, seed=23)
    ids = ids_of(len(x))
    q = clustered(40, seed=24)
    results = []
    for background in (False, True):
        index = ItemIndex(DIM, exact_below=1_000, background=background)
        for lo in range(0, 8_000, 700):  # grows past the threshold, doubles, doubles
            index.upsert(ids[lo : lo + 700], x[lo : lo + 700])
        index.upsert(ids[:3_000], moved[:3_000])  # a churn of incremental changes
        index.upsert(ids, moved, recluster=True)  # every vector moved: re-clustered
        index.settle()
        state = index.state_dict(include_index=False)
        found, scores = index.search(q, 50)
        results.append((state["trained_size"], state["changes"], found, scores))
    (size_a, changes_a, found_a, scores_a), (size_b, changes_b, found_b, scores_b) = results
    assert (size_a, changes_a) == (size_b, changes_b) == (8_000, 0)
    assert found_a == found_b
    for a, b in zip(scores_a, scores_b, strict=True):
        np.testing.assert_array_equal(a, b)


def test_recluster_rebuilds_on_the_new_vectors() -> None:
    x = clustered(4_000, seed=25)
    ids = ids_of(len(x))
    index = ItemIndex(DIM, exact_below=1_000)
    index.upsert(ids, x)
    index.upsert(ids[:100], clustered(100, seed=26))  # incremental: counted
    assert index.state_dict()["changes"] == 100
    fresh = clustered(4_000, seed=27)
    index.upsert(ids, fresh, recluster=True)
    state = index.state_dict()
    assert state["trained_size"] == 4_000 and state["changes"] == 0
    q = clustered(50, seed=28)
    found, _ = index.search(q, 100)
    truth = exact_ids(fresh, ids, q, 100)
    recall = np.mean([len(set(f) & t) / 100 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95, recall


def test_a_failed_background_build_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise MemoryError("no room for the lists")

    monkeypatch.setattr(ann, "_build_ivf", broken)
    index = ItemIndex(DIM, exact_below=500, background=True)
    index.upsert(ids_of(600), clustered(600, seed=29))
    with pytest.raises(RuntimeError, match="re-clustering the index failed"):
        index.settle()
    assert not index.building and not index.is_approximate  # exact search goes on
    assert len(index.search(clustered(1, seed=30), 5)[0][0]) == 5


def test_changes_during_the_first_background_build_count_whatever_its_speed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Upserts while the first build runs count against it as they would against lists
    built in place: a slow build ends where a quick one does."""
    x = clustered(300, seed=31)
    ids = ids_of(300)
    ends = []
    for held in (False, True):
        hold = _HeldBuilds(monkeypatch) if held else None
        if hold is None:
            monkeypatch.undo()
        index = ItemIndex(DIM, exact_below=256, background=True)
        for i in range(300):
            index.upsert([ids[i]], x[i : i + 1])
            if hold is not None and i == 299:
                hold.release.set()
            elif hold is None:
                index.settle()  # a build that ends at once
        if hold is not None:
            hold.release.set()
        index.settle()
        state = index.state_dict(include_index=False)
        ends.append((state["trained_size"], state["changes"]))
    assert ends[0] == ends[1], ends
