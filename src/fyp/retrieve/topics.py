"""Topics: unseen videos of the hashtags the user enjoys most (and of the topics they
asked for more of).

The other personal source, co-engagement, can only propose videos someone has already
engaged with; this one reaches the rest of a topic's catalogue, so a user who loves one
topic is offered all of it, not only its popular corner. Each request reads a window of
each topic's videos from a point that moves with what the user was served, so successive
pages walk the whole topic instead of re-reading the same, already served, rows. (From
the state alone, not the request id: the same state gives the same candidates, which
the evaluation's replays rely on.)"""

from __future__ import annotations

import heapq
import zlib

from fyp.retrieve.base import FeedContext
from fyp.safety.text import normal_tag
from fyp.state.updater import LogState
from fyp.types import DAY_MS, Candidate

# A hashtag counts once the user has enjoyed at least this much of it (decayed positives).
MIN_POSITIVES = 1.0
SCAN_PER_TAKEN = 8  # rows read per candidate wanted, at most (seen ones are skipped)


class TopicSource:
    name = "topics"

    def __init__(self, state: LogState, seeds: int, limit: int) -> None:
        self.state = state
        self.seeds = seeds
        self.limit = limit
        self._half_life_ms = state.settings.ranker.affinity_half_life_days * DAY_MS

    def seed_topics(self, ctx: FeedContext) -> list[tuple[str, str]]:
        """(folded topic, reason) to draw from: the topics asked for more of, then the
        user's best-liked hashtags (decayed positives, shrunk towards their views, and
        the session's dwell evidence first: what was just finished leads); never one
        asked for less of, nor one finished less than the person's other cards this
        session."""
        prefs = ctx.controls.topic_weights
        out = [(t, f"More #{t}, as you asked") for t, p in sorted(prefs.items()) if p == "more"]
        liked: list[tuple[float, str]] = []
        rate = ctx.user.session_rate(ctx.now)
        for tag, aff in ctx.user.hashtags.items():
            if aff.positives < MIN_POSITIVES:
                continue  # decay only lowers it
            views, positives = aff.decayed(ctx.now, self._half_life_ms)
            session = aff.session_lift(ctx.now, rate)
            # Finished less than the person's other cards this session: not now (the
            # evidence fades, and the topic comes back).
            if positives >= MIN_POSITIVES and session >= 0:
                liked.append((positives * positives / (views + 3.0) + session, tag))
        taken = {t for t, _ in out}
        for _, tag in heapq.nlargest(self.seeds, liked):
            topic = normal_tag(tag)
            if topic and topic not in taken and prefs.get(topic) != "less":
                taken.add(topic)
                out.append((topic, f"You often enjoy #{topic} videos"))
        return out

    def fetch(self, ctx: FeedContext) -> list[Candidate]:
        seeds = self.seed_topics(ctx) if self.limit > 0 else []
        if not seeds:
            return []
        catalog = self.state.catalog
        viewed, served = ctx.user.viewed, ctx.user.served_set
        per_topic = max(self.limit // len(seeds), 1)
        out: list[Candidate] = []
        proposed: set[int] = set()
        for topic, reason in seeds:
            rows = catalog.rows_by_topic.get(topic, [])
            if not rows:
                continue
            offset = zlib.crc32(f"{ctx.user_id}:{topic}".encode()) + len(ctx.user.served)
            start = offset % len(rows)
            taken = 0
            for k in range(min(len(rows), SCAN_PER_TAKEN * per_topic)):
                row = rows[(start + k) % len(rows)]
                if row in viewed or row in served or row in proposed:
                    continue
                proposed.add(row)
                out.append(Candidate(row, catalog.videos[row].video_id, self.name, reason))
                taken += 1
                if taken >= per_topic:
                    break
        return out[: self.limit]
