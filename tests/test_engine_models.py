"""The engine with its learned models on: they train from the learning loop, take over
ranking once warm, retrieval joins the sources, and the feed's invariants still hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fyp.config import load_settings
from fyp.engine import Engine
from fyp.types import Video

NOW = 1_700_000_000_000


def test_learned_models_warm_up_and_serve(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={
            "data_dir": tmp_path,
            "privacy": {"require_registered_users": False},
            "model": {
                "enabled": True,
                "warmup_examples": 1_000,
                "retrieval_warmup": 200,
                "ranker_batch": 128,
                "retrieval_batch": 64,
                "min_count": 1,
            },
        },
        environ={},
    )
    engine = Engine.open(settings, clock=lambda: NOW)
    try:
        assert engine.models is not None
        assert engine.pipeline.ranker.active() == "first_ranker"  # cold: the fallback
        engine.upsert_videos(
            [
                Video(
                    f"v{i}",
                    f"c{i % 20}",
                    20_000,
                    hashtags=(f"t{i % 7}",),
                    created_at=NOW - 86_400_000,
                )
                for i in range(400)
            ]
        )
        rng = np.random.default_rng(0)
        events: list[dict[str, object]] = []
        for n in range(3_000):
            u, v = int(rng.integers(0, 60)), int(rng.integers(0, 400))
            # Users like creators of their own parity: a taste to learn.
            watched = 20_000 if (v % 20) % 2 == u % 2 else 500
            events.append(
                {
                    "event_id": f"e{n}",
                    "user_id": f"u{u}",
                    "video_id": f"v{v}",
                    "type": "view",
                    "ts": NOW - 3_600_000 + n * 1_000,
                    "watch_ms": watched,
                }
            )
        for start in range(0, len(events), 1_000):
            assert not engine.ingest(events[start : start + 1_000], now=NOW).rejected
        engine.learn()
        models = engine.models
        assert models.ranker.examples_seen >= 1_000 and models.ranker.warm
        assert models.retrieval.warm and len(models.index) == 400
        assert engine.pipeline.ranker.active() == "mmoe"

        seen: set[str] = set()
        learned_reasons: list[str] = []
        for _ in range(5):
            feed = engine.feed("u2", count=10, now=NOW)
            ids = [item.video_id for item in feed.items]
            assert len(ids) == 10 and not seen & set(ids)  # nothing served twice
            seen.update(ids)
            learned_reasons += [i.reason for i in feed.items if i.source == "two_tower"]
        sources = engine.pipeline.counters.source_candidates
        assert sources["two_tower"] > 0
        # A served two-tower card names the watch it is most like (worded once the page
        # is chosen, for the served cards only).
        assert learned_reasons and all(
            r.startswith("Like ") and ", which you watched" in r for r in learned_reasons
        ), learned_reasons
    finally:
        engine.close()
