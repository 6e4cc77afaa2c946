"""Two-tower retrieval learns planted tastes, through the user's row and through the
history it pools, and its state round-trips."""

from __future__ import annotations

import numpy as np
import torch

from fyp.catalog.index import CatalogIndex
from fyp.model.two_tower import RetrievalExample, TwoTower, TwoTowerConfig
from fyp.types import Video

NOW = 1_700_000_000_000


def _catalog(n: int = 200) -> CatalogIndex:
    catalog = CatalogIndex()
    catalog.upsert(
        [Video(f"v{i}", f"c{i % 10}", 15_000, hashtags=(f"t{i % 10}",)) for i in range(n)]
    )
    return catalog


def _group(catalog: CatalogIndex, row: int) -> int:
    return int(catalog.videos[row].creator_id[1:]) // 5  # c0-c4: 0, c5-c9: 1


def _examples(catalog: CatalogIndex, n: int, seed: int) -> list[RetrievalExample]:
    """Even users engage with group 0's videos, odd users with group 1's."""
    rng = np.random.default_rng(seed)
    rows_of = [[r for r in range(len(catalog)) if _group(catalog, r) == g] for g in (0, 1)]
    history: dict[str, list[int]] = {}
    out = []
    for i in range(n):
        u = int(rng.integers(0, 40))
        row = int(rng.choice(rows_of[u % 2]))
        past = history.setdefault(f"u{u}", [])
        out.append(RetrievalExample(f"u{u}", row, tuple(past[-10:]), NOW + i))
        past.append(row)
    return out


def _trained(seed: int = 0) -> tuple[CatalogIndex, TwoTower]:
    catalog = _catalog()
    model = TwoTower(TwoTowerConfig(min_count=1, seed=seed), catalog)
    examples = _examples(catalog, 6_400, seed=1)
    for start in range(0, len(examples), 64):
        model.learn(examples[start : start + 64])
    return catalog, model


def _share_of_own_group(
    catalog: CatalogIndex, model: TwoTower, user: str, history: list[int]
) -> float:
    items = model.item_vectors(list(range(len(catalog))), NOW)
    scores = items @ model.user_vector(user, history, NOW)
    top = np.argsort(-scores)[:20]
    want = int(user[1:]) % 2 if user[1:].isdigit() else _group(catalog, history[0])
    return float(np.mean([_group(catalog, int(r)) == want for r in top]))


def test_learns_planted_tastes_for_known_users() -> None:
    catalog, model = _trained()
    assert _share_of_own_group(catalog, model, "u0", []) > 0.8
    assert _share_of_own_group(catalog, model, "u1", []) > 0.8


def test_a_new_user_is_described_by_their_history() -> None:
    catalog, model = _trained()
    group1 = [r for r in range(len(catalog)) if _group(catalog, r) == 1][:5]
    # "new" has no row of their own: only the pooled history tells the towers who they are.
    assert _share_of_own_group(catalog, model, "new", group1) > 0.8


def test_state_round_trip_and_determinism() -> None:
    catalog, a = _trained(seed=2)
    _, b = _trained(seed=2)
    rows = list(range(len(catalog)))
    assert np.array_equal(a.item_vectors(rows, NOW), b.item_vectors(rows, NOW))
    c = TwoTower(TwoTowerConfig(min_count=1, seed=9), catalog)
    c.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(c.item_vectors(rows, NOW), a.item_vectors(rows, NOW))
    np.testing.assert_array_equal(
        c.user_vector("u3", [1, 2], NOW), a.user_vector("u3", [1, 2], NOW)
    )


def test_the_served_user_vector_is_the_trained_tower_s() -> None:
    """The user vector serving computes in numpy is what training's torch pass computes
    for the same user and history (a known user, an unknown one, an empty history, a
    history longer than the tower pools, with a video the table has no row for)."""
    catalog = _catalog()
    model = TwoTower(TwoTowerConfig(min_count=1, history=5), catalog)
    examples = _examples(catalog, 640, seed=1)
    for start in range(0, len(examples), 64):
        model.learn(examples[start : start + 64])
    catalog.upsert([Video("unseen", "c-new", 15_000)])
    unseen = catalog.row_of["unseen"]
    for user, history in [
        ("u3", [1, 2, 3]),
        ("nobody", [4]),
        ("u4", []),
        ("u5", [*range(10, 18), unseen]),
    ]:
        with torch.no_grad():
            x, _ = model._user_input([user], [history], NOW, train=False)
            trained = model.user_tower(x).numpy()[0]
        np.testing.assert_allclose(
            model.user_vector(user, history, NOW), trained, rtol=1e-5, atol=1e-6
        )
