"""Collisionless embedding tables: rows, frequency filter, expiry, Adagrad, checkpoints."""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fyp.model.embeddings import (
    ADAGRAD_EPS,
    EmbeddingTable,
    EmbeddingTables,
    TableConfig,
    gather,
    scatter_gradients,
)

POOL = [f"id{i}" for i in range(12)]


def check_invariants(t: EmbeddingTable) -> None:
    """No two ids share a row; the row -> id side agrees; free rows hold no id."""
    ids = t.ids()
    rows = [t.row_of(i) for i in ids]
    assert len(set(rows)) == len(rows) == len(t)
    assert all(0 <= r < t.capacity for r in rows)
    for i, r in zip(ids, rows, strict=True):
        assert t._id_of[r] == i
        assert i in t
    assert set(t._free).isdisjoint(rows)
    assert len(t._free) + len(rows) == len(t._id_of)
    assert t.memory_bytes() > 0


class Model:
    """A plain reference of which ids have rows and what is pending."""

    def __init__(self, cfg: TableConfig) -> None:
        self.cfg = cfg
        self.last: dict[str, int] = {}  # id with a row -> last used
        self.pending: OrderedDict[str, int] = OrderedDict()

    def lookup(self, ids: list[str], now: int, admit: bool, touch: bool) -> None:
        if admit:
            for i in ids:
                if i in self.last:
                    continue
                c = self.pending.pop(i, 0) + 1
                if c >= self.cfg.min_count:
                    self.last[i] = now
                else:
                    self.pending[i] = c
                    if len(self.pending) > self.cfg.pending_limit:
                        self.pending.popitem(last=False)
        if touch:
            for i in ids:
                if i in self.last:
                    self.last[i] = max(self.last[i], now)

    def expire(self, now: int) -> int:
        assert self.cfg.expire_after_ms is not None
        gone = [i for i, t in self.last.items() if t <= now - self.cfg.expire_after_ms]
        for i in gone:
            del self.last[i]
        return len(gone)

    def forget(self, ids: list[str]) -> int:
        n = 0
        for i in ids:
            self.pending.pop(i, None)
            if self.last.pop(i, None) is not None:
                n += 1
        return n


op = st.one_of(
    st.tuples(
        st.just("lookup"),
        st.lists(st.sampled_from(POOL), max_size=8),
        st.booleans(),
        st.booleans(),
        st.integers(0, 40),
    ),
    st.tuples(st.just("expire"), st.integers(0, 60)),
    st.tuples(st.just("forget"), st.lists(st.sampled_from(POOL), max_size=4)),
    st.tuples(st.just("grad"), st.lists(st.sampled_from(POOL), max_size=6)),
)


@settings(max_examples=120, deadline=None)
@given(
    ops=st.lists(op, max_size=40),
    min_count=st.integers(1, 3),
    pending_limit=st.integers(1, 5),
)
def test_distinct_ids_never_share_a_row(
    ops: list[tuple[Any, ...]], min_count: int, pending_limit: int
) -> None:
    cfg = TableConfig(dim=4, min_count=min_count, expire_after_ms=50, pending_limit=pending_limit)
    t = EmbeddingTable("t", cfg, seed=1)
    model = Model(cfg)
    now = 0
    for o in ops:
        before = {i: t.row_of(i) for i in t.ids()}
        if o[0] == "lookup":
            _, ids, admit, touch, dt = o
            now += dt
            rows = t.lookup(ids, now, admit=admit, touch=touch)
            model.lookup(ids, now, admit, touch)
            assert rows.tolist() == [t.row_of(i) for i in ids]
        elif o[0] == "expire":
            now += o[1]
            assert t.expire(now) == model.expire(now)
        elif o[0] == "forget":
            assert t.forget(o[1]) == model.forget(o[1])
        else:
            rows = t.lookup(o[1], now)
            t.apply_gradients(rows, np.ones((len(rows), 4), dtype=np.float32))
        check_invariants(t)
        assert set(t.ids()) == set(model.last)
        assert dict(t._pending) == dict(model.pending)
        assert len(t._pending) <= pending_limit
        # An id that kept a row through the operation kept the same row.
        for i, r in before.items():
            if i in t:
                assert t.row_of(i) == r


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 64),
    window_steps=st.integers(1, 10),
    min_count=st.integers(1, 2),
)
def test_expiry_bounds_memory_on_an_endless_stream(
    batch: int, window_steps: int, min_count: int
) -> None:
    step_ms = 1_000
    cfg = TableConfig(
        dim=8,
        min_count=min_count,
        expire_after_ms=window_steps * step_ms,
        pending_limit=3 * batch,
    )
    t = EmbeddingTable("t", cfg)
    bound = batch * (window_steps + 1)
    mem: list[int] = []
    caps: list[int] = []
    for step in range(150):
        now = step * step_ms
        # Fresh ids every step (each seen min_count times, so all are admitted), and
        # some fresh ids seen once, which only ever pend.
        ids = [f"s{step}-{k}" for k in range(batch)]
        t.lookup(ids * min_count, now, admit=True, touch=True)
        if min_count > 1:
            t.lookup([f"once{step}-{k}" for k in range(batch)], now, admit=True)
        t.expire(now)
        assert len(t) <= bound
        assert len(t._pending) <= 3 * batch
        mem.append(t.memory_bytes())
        caps.append(t.capacity)
    assert len(t) == batch * window_steps
    # Capacity stops growing once the window is full; memory stays flat after that.
    assert caps[-1] == caps[50]
    assert max(mem[100:]) <= 1.25 * max(mem[50:100])
    check_invariants(t)


def test_frequency_filter() -> None:
    t = EmbeddingTable("video", TableConfig(dim=4, min_count=3))
    fb = t.fallback()
    for _ in range(2):
        rows = t.lookup(["a"], 10, admit=True)
        assert rows.tolist() == [-1]
        assert "a" not in t
        np.testing.assert_array_equal(t.vectors(rows), fb[None, :])
    # Serving lookups do not count.
    assert t.lookup(["a"] * 5, 10).tolist() == [-1] * 5
    assert t.pending_count("a") == 2
    rows = t.lookup(["a"], 10, admit=True)
    assert rows[0] >= 0 and t.row_of("a") == rows[0]
    assert t.pending_count("a") == 0
    assert not np.array_equal(t.vectors(rows)[0], fb)
    # Repeats in one call count each; every entry of the admitted id gets the row.
    rows = t.lookup(["b", "c", "b", "b"], 10, admit=True)
    assert rows[0] == rows[2] == rows[3] == t.row_of("b") >= 0
    assert rows[1] == -1
    # min_count=1 admits at once.
    t1 = EmbeddingTable("user", TableConfig(dim=4))
    assert t1.lookup(["x"], 0, admit=True)[0] == 0


def test_pending_is_bounded_least_recently_seen_dropped() -> None:
    t = EmbeddingTable("t", TableConfig(dim=2, min_count=3, pending_limit=2))
    t.lookup(["a", "b"], 0, admit=True)
    t.lookup(["a"], 0, admit=True)  # a is now the most recently seen
    t.lookup(["c"], 0, admit=True)  # drops b
    assert (t.pending_count("a"), t.pending_count("b"), t.pending_count("c")) == (2, 0, 1)
    assert t.lookup(["a"], 0, admit=True)[0] >= 0


def test_adagrad_known_answer_and_duplicates_sum() -> None:
    cfg = TableConfig(dim=3, learning_rate=0.1, initial_accumulator=0.1)
    t = EmbeddingTable("t", cfg)
    rows = t.lookup(["a", "b"], 0, admit=True)
    w0 = t.vectors(rows).astype(np.float64)
    g1 = np.array([1.0, -2.0, 0.5])
    g2 = np.array([0.5, 0.5, 0.0])
    gb = np.array([0.0, 3.0, -1.0])
    ra, rb = int(rows[0]), int(rows[1])
    t.apply_gradients(
        np.array([ra, rb, ra], dtype=np.int64), np.stack([g1, gb, g2]).astype(np.float32)
    )
    g = g1 + g2
    acc_a = 0.1 + g * g
    want_a = w0[0] - 0.1 * g / (np.sqrt(acc_a) + ADAGRAD_EPS)
    acc_b = 0.1 + gb * gb
    want_b = w0[1] - 0.1 * gb / (np.sqrt(acc_b) + ADAGRAD_EPS)
    got = t.vectors(rows)
    np.testing.assert_allclose(got[0], want_a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[1], want_b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t._acc[ra], acc_a, rtol=1e-6)
    # Matches torch.optim.Adagrad over several steps.
    p = torch.nn.Parameter(torch.from_numpy(got[0].copy()))
    opt = torch.optim.Adagrad([p], lr=0.1, eps=ADAGRAD_EPS)
    opt.state[p]["sum"] = torch.from_numpy(t._acc[ra].copy())
    opt.state[p]["step"] = torch.tensor(1.0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        gs = rng.standard_normal(3).astype(np.float32)
        t.apply_gradients(np.array([ra], dtype=np.int64), gs[None, :])
        opt.zero_grad()
        p.grad = torch.from_numpy(gs.copy())
        opt.step()
    np.testing.assert_allclose(t.vectors(np.array([ra]))[0], p.detach().numpy(), rtol=1e-5)


def test_fallback_is_learned_from_rows_without_a_row() -> None:
    t = EmbeddingTable("t", TableConfig(dim=2, min_count=5, learning_rate=0.1))
    t.lookup(["z"], 0, admit=True)
    rows = t.lookup(["x", "y", "z"], 0, admit=True)
    assert rows.tolist() == [-1, -1, -1]
    fb0 = t.fallback().astype(np.float64)
    grads = np.array([[1.0, 0.0], [1.0, 2.0], [0.0, 0.0]], dtype=np.float32)
    t.apply_gradients(rows, grads)
    g = grads.sum(axis=0).astype(np.float64)
    acc = 0.1 + g * g
    np.testing.assert_allclose(t.fallback(), fb0 - 0.1 * g / np.sqrt(acc), rtol=1e-6)
    assert len(t) == 0
    # vectors() returns a copy.
    v = t.vectors(rows)
    v[:] = 7.0
    assert not np.any(t.fallback() == 7.0)


def test_deterministic_with_a_seed() -> None:
    def run(seed: int) -> np.ndarray:
        t = EmbeddingTable("t", TableConfig(dim=4, min_count=2), seed=seed)
        rows = t.lookup(["a", "b", "a", "c", "b"], 0, admit=True)
        t.apply_gradients(rows, np.ones((5, 4), dtype=np.float32))
        return t.vectors(t.lookup(["a", "b", "c"], 0))

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))
    ta, tb = EmbeddingTables({}, seed=5), EmbeddingTables({}, seed=5)
    ra = ta["user"].lookup(["u"], 0, admit=True)
    rb = tb["user"].lookup(["u"], 0, admit=True)
    np.testing.assert_array_equal(ta["user"].vectors(ra), tb["user"].vectors(rb))
    rv = ta["video"].lookup(["u"], 0, admit=True)
    assert not np.array_equal(ta["user"].vectors(ra), ta["video"].vectors(rv))


def _busy_table() -> EmbeddingTable:
    t = EmbeddingTable(
        "video", TableConfig(dim=5, min_count=2, expire_after_ms=100, pending_limit=50), seed=9
    )
    for step in range(20):
        ids = [f"v{(step * 7 + k) % 40}" for k in range(10)]
        rows = t.lookup(ids, step * 10, admit=True, touch=True)
        t.apply_gradients(rows, np.full((10, 5), 0.1 * step, dtype=np.float32))
        t.expire(step * 10)
    t.forget(["v3", "v4"])
    t.lookup(["p1", "p2", "p1", "p3"], 200, admit=True)
    assert len(t) and len(t._free) and len(t._pending)
    return t


def _assert_same(a: EmbeddingTable, b: EmbeddingTable) -> None:
    assert a.name == b.name and a.cfg == b.cfg
    assert {i: a.row_of(i) for i in a.ids()} == {i: b.row_of(i) for i in b.ids()}
    hwm = len(a._id_of)
    assert len(b._id_of) == hwm
    np.testing.assert_array_equal(a._vec[:hwm], b._vec[:hwm])
    np.testing.assert_array_equal(a._acc[:hwm], b._acc[:hwm])
    np.testing.assert_array_equal(a._last_used[:hwm], b._last_used[:hwm])
    np.testing.assert_array_equal(a.fallback(), b.fallback())
    np.testing.assert_array_equal(a._fb_acc, b._fb_acc)
    assert list(a._pending.items()) == list(b._pending.items())
    assert a._free == b._free
    assert a.capacity == b.capacity


@pytest.mark.parametrize("via_npz", [False, True])
def test_state_dict_round_trip(via_npz: bool) -> None:
    t = _busy_table()
    state = t.state_dict()
    if via_npz:
        buf = io.BytesIO()
        np.savez(buf, **state)
        buf.seek(0)
        with np.load(buf, allow_pickle=False) as f:
            state = {k: f[k] for k in f.files}
    u = EmbeddingTable.from_state_dict(state)
    _assert_same(t, u)
    check_invariants(u)
    # They go on identically (new rows drawn from the restored generator).
    for x in (t, u):
        rows = x.lookup(["new1", "new1", "v0", "new2", "new2"], 500, admit=True, touch=True)
        x.apply_gradients(rows, np.ones((5, 5), dtype=np.float32))
        x.expire(560)
    _assert_same(t, u)


def test_tables_state_round_trip_and_expire() -> None:
    tables = EmbeddingTables({"user": TableConfig(dim=3, expire_after_ms=10)}, seed=2)
    assert tables["user"].dim == 3 and tables["video"].dim == 32
    assert set(tables) == set(EmbeddingTables.KINDS)
    tables["user"].lookup(["a", "b"], 0, admit=True)
    tables["hashtag"].lookup(["#x"], 0, admit=True)
    back = EmbeddingTables.from_state_dict(tables.state_dict())
    for kind in EmbeddingTables.KINDS:
        _assert_same(tables[kind], back[kind])
    assert back.expire(20) == {"user": 2, "video": 0, "creator": 0, "sound": 0, "hashtag": 0}
    assert set(back.memory_bytes()) == set(EmbeddingTables.KINDS)
    with pytest.raises(ValueError, match="unknown table kinds"):
        EmbeddingTables({"users": TableConfig()})
    with pytest.raises(KeyError):
        tables["users"]


def test_forget_drops_rows_and_pending_and_rows_are_reused() -> None:
    t = EmbeddingTable("user", TableConfig(dim=2, min_count=2))
    t.lookup(["a", "a", "b", "b", "c"], 0, admit=True)
    ra = t.row_of("a")
    assert t.forget(["a", "c", "nobody"]) == 1
    assert "a" not in t and t.pending_count("c") == 0 and t.row_of("a") == -1
    assert t.lookup(["a"], 0, admit=True)[0] == -1  # counts start again
    assert t.lookup(["d", "d"], 0, admit=True)[0] == ra  # the freed row is reused
    check_invariants(t)


def test_expire_evicts_only_unused_rows() -> None:
    t = EmbeddingTable("t", TableConfig(dim=2, expire_after_ms=100))
    t.lookup(["a", "b", "c"], 0, admit=True)
    t.lookup(["a"], 60, touch=True)  # serving lookup that refreshes
    t.lookup(["b"], 60)  # no touch: does not refresh
    t.lookup(["c"], 30, admit=True, touch=True)
    t.lookup(["c"], 10, touch=True)  # out of order: last-used does not go back
    assert t.expire(99) == 0
    assert t.expire(100) == 1 and t.ids() == ["a", "c"]
    assert t.expire(130) == 1 and t.ids() == ["a"]
    never = EmbeddingTable("t", TableConfig(dim=2, expire_after_ms=None))
    never.lookup(["a"], 0, admit=True)
    assert never.expire(10**15) == 0


def test_memory_accounting() -> None:
    t = EmbeddingTable("user", TableConfig(dim=32))
    assert 8 * 32 + 16 < t.bytes_per_row < 500
    m0 = t.memory_bytes()
    t.lookup([f"u{i:07d}" for i in range(5_000)], 0, admit=True)
    assert t.capacity == 8192
    per_row = (t.memory_bytes() - m0) / 5_000
    assert 8 * 32 + 16 < t.bytes_per_row <= per_row < 2 * t.bytes_per_row
    assert t.stats()["rows"] == 5_000


def test_bad_input() -> None:
    t = EmbeddingTable("t", TableConfig(dim=2))
    rows = t.lookup(["a"], 0, admit=True)
    with pytest.raises(ValueError, match="shape"):
        t.apply_gradients(rows, np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(IndexError):
        t.vectors(np.array([5], dtype=np.int64))
    with pytest.raises(ValueError):
        TableConfig(dim=0)
    with pytest.raises(ValueError):
        TableConfig(min_count=0)
    with pytest.raises(ValueError):
        TableConfig(expire_after_ms=0)


def test_gather_scatter_learns_a_toy_regression() -> None:
    dim, n_ids = 8, 30
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ids = [f"x{i}" for i in range(n_ids)]
    targets = torch.from_numpy(rng.standard_normal((n_ids, dim)).astype(np.float32))
    t = EmbeddingTable("t", TableConfig(dim=dim, learning_rate=0.3, init_scale=0.1), seed=0)
    head = torch.nn.Linear(dim, dim)
    opt = torch.optim.SGD(head.parameters(), lr=0.05)

    def loss_of(batch: np.ndarray, train: bool) -> float:
        rows = t.lookup([ids[i] for i in batch], 0, admit=train, touch=train)
        leaf = gather(t, rows)
        assert leaf.requires_grad and leaf.is_leaf and leaf.shape == (len(batch), dim)
        loss = torch.nn.functional.mse_loss(head(leaf), targets[torch.from_numpy(batch)])
        if train:
            opt.zero_grad()
            loss.backward()
            scatter_gradients(t, rows, leaf)
            opt.step()
        return float(loss.detach())

    everyone = np.arange(n_ids)
    t.lookup(ids, 0, admit=True)
    before = loss_of(everyone, train=False)
    for _ in range(300):
        loss_of(rng.integers(0, n_ids, size=16), train=True)
    after = loss_of(everyone, train=False)
    assert after < 0.2 * before
    # No gradient: nothing happens.
    rows = t.lookup(ids[:2], 0)
    v = t.vectors(rows)
    scatter_gradients(t, rows, gather(t, rows))
    np.testing.assert_array_equal(t.vectors(rows), v)


def test_lookup_padded_and_optional() -> None:
    from fyp.model.embeddings import lookup_optional, lookup_padded

    table = EmbeddingTable("t", TableConfig(dim=2, min_count=1))
    rows, counts = lookup_padded(table, [["a", "b"], [], ["b"]], 3, 0, admit=True)
    a, b = table.row_of("a"), table.row_of("b")
    assert rows.tolist() == [[a, b, -1], [-1, -1, -1], [b, -1, -1]]
    assert counts.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="more than 1"):
        lookup_padded(table, [["a", "b"]], 1, 0)
    assert lookup_optional(table, ["a", None], 0).tolist() == [a, -1]
