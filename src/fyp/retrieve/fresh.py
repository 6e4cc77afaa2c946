"""Fresh uploads: recent videos that have not yet had their first audience.

Each video uploaded within ``window`` is promised ``exposure_budget`` impressions; the
fewer it has had, the likelier it is to be proposed (a random draw, so that new videos
share the exposure rather than the same few taking it all)."""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

from fyp.retrieve.base import FeedContext
from fyp.safety.text import normal_tag
from fyp.state.updater import LogState
from fyp.types import Candidate

TOPICAL = 4  # newest uploads of the hashtags the person is finishing proposed, at most
TOPICAL_SCAN = 200  # of a hashtag's last videos looked at for one


def _rng(seed: int) -> np.random.Generator:
    """``np.random.default_rng(seed)``, the same stream, without its wrapper's cost."""
    return np.random.Generator(np.random.PCG64(seed))


class FreshSource:
    name = "fresh"
    reason = "New video, shown to help it find its audience"

    def __init__(self, state: LogState, limit: int, window_ms: int, exposure_budget: int) -> None:
        self.state = state
        self.limit = limit
        self.window_ms = window_ms
        self.exposure_budget = exposure_budget
        # (catalog version, computed at, rows uploaded since computed at - window,
        #  cumulative exposure need of those rows)
        self._pool: tuple[int, int, npt.NDArray[np.intp], npt.NDArray[np.float64]] | None = None

    def _recent(self, now: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
        """Rows uploaded within the window (or a little before) with the cumulative sum of
        their unmet exposure: kept for up to a second (and until the catalog changes),
        since scanning 100k upload times and weighting ten thousand new uploads per
        request would cost more than everything else this source does."""
        catalog = self.state.catalog
        pool = self._pool
        if pool is None or pool[0] != catalog.version or not pool[1] <= now < pool[1] + 1_000:
            created = catalog.created_at[: len(catalog)]
            rows = np.flatnonzero(created >= now - self.window_ms).astype(np.intp)
            need = np.maximum(self.exposure_budget - self.state.stats.exposures[rows], 0)
            self._pool = pool = (catalog.version, now, rows, np.cumsum(need, dtype=np.float64))
        return pool[2], pool[3]

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        catalog, stats = self.state.catalog, self.state.stats
        stats.ensure(len(catalog))
        pool, cum = self._recent(ctx.now)
        if len(pool) == 0 or cum[-1] <= 0 or self.limit <= 0:
            return []
        if len(pool) > 2 * self.limit:
            # Draw rows in proportion to their unmet exposure (weights up to a second
            # old), then keep the distinct ones still eligible right now.
            rng = _rng(zlib.crc32(ctx.request_id.encode()))
            picks = np.searchsorted(cum, rng.random(4 * self.limit) * cum[-1], side="right")
            picks = np.sort(np.minimum(picks, len(pool) - 1))
            distinct = np.empty(len(picks), dtype=bool)
            distinct[0] = True
            np.not_equal(picks[1:], picks[:-1], out=distinct[1:])
            rows = pool[picks[distinct]]  # as np.unique would, without its fixed costs
        else:
            rows = pool
        exposures = stats.exposures
        created = catalog.created_at[rows]
        keep = (exposures[rows] < self.exposure_budget) & (created >= ctx.now - self.window_ms)
        rows = rows[keep & (created <= ctx.now)]
        if len(rows) > self.limit:
            need = (self.exposure_budget - exposures[rows]).astype(np.float64)
            rng = _rng(zlib.crc32(ctx.request_id.encode()) + 1)
            keys = rng.random(len(rows)) ** (1.0 / need)  # Efraimidis-Spirakis draw
            rows = rows[np.argpartition(-keys, self.limit - 1)[: self.limit]]
        picked = rows.tolist()
        picked += [r for r in self._topical(ctx) if r not in set(picked)]
        videos = catalog.videos
        budget = max(self.exposure_budget, 1)
        return [
            Candidate(r, videos[r].video_id, self.name, self.reason, source_score=1.0 - e / budget)
            for r, e in zip(picked, exposures[picked].tolist(), strict=True)
        ]

    def _topical(self, ctx: FeedContext) -> list[int]:
        """New uploads of the hashtags the person is finishing this session (the newest
        of each, then the next newest, :data:`TOPICAL` in all): a first audience likely
        to want them, which also tells more about a new video than anyone's. (Several of
        one hashtag when few stand out: after one finished card, one or two do, and a
        page's fresh slots would otherwise go to uploads of what they skip.)"""
        tags = ctx.user.standout_hashtags(ctx.now)[:TOPICAL]
        if not tags:
            return []
        catalog, exposures = self.state.catalog, self.state.stats.exposures
        seen, served = ctx.user.viewed, ctx.user.served_set
        since = ctx.now - self.window_ms
        per_tag = -(-TOPICAL // len(tags))
        found: list[list[int]] = []
        for tag in tags:
            rows = catalog.rows_by_topic.get(normal_tag(tag), [])
            mine: list[int] = []
            # Newest uploads last, mostly (rows are in the order videos were first upserted).
            for r in rows[: -TOPICAL_SCAN - 1 : -1]:
                created = int(catalog.created_at[r])
                if (
                    since <= created <= ctx.now
                    and exposures[r] < self.exposure_budget
                    and r not in seen
                    and r not in served
                ):
                    mine.append(r)
                    if len(mine) >= per_tag:
                        break
            found.append(mine)
        out: list[int] = []
        for k in range(per_tag):  # each hashtag's newest first, then the next newest
            for mine in found:
                if k < len(mine) and mine[k] not in out and len(out) < TOPICAL:
                    out.append(mine[k])
        return out
