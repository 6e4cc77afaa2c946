"""How fast a newcomer's feed learns them, from watch time alone, through the HTTP API.

The world is the demo's (``fyp.eval.simulate.build_world``): videos over topics, with
creators, sounds and hashtags that lean to a topic. Background users of that world give
the engine a history (their views, likes and follows, drawn from their hidden tastes and
ingested before the server starts). Then newcomers arrive, each with one dominant topic:
they watch every video of it to the end and skip every other card after 1 s; no likes,
no follows. They fetch in two ways:

- ``player``: exactly as the shipped web player fetches (read from the ``player.js`` of
  the code under test): a first page of its ``PAGE``; on each swipe the view of the card
  just left is posted and acknowledged, then the cards after the new current one are
  asked for again (``after=`` the last page, ``shown=`` its cards shown so far), or, for
  a player without ``after`` (before issue 20's third step), the next page once no more
  than its ``PREFETCH_AT`` cards remain after the new current one;
- ``page``: a page of 10, asked for after the last event of the previous page.

Reported per mode: the on-taste share of cards 1-10, 11-20 and 21-30 (median over
newcomers, with a 95% bootstrap interval for 11-20; the mean of 11-20 too), the share of
newcomers shown their topic at all in cards 1-10 (page by page, the only ones whose
cards 11-20 can lean: the median of 11-20 follows whether they are more than half),
"swipes until half of the next ten are on-taste" (median and p90; a newcomer who never
gets there counts as never), and the topic entropy
of each ten cards (the median of cards 21-30, and the lowest window after card 10: the
variety floor as measured). In player mode, ``--several`` more newcomers have two or
three tastes, each a share of their attention (a card of a taste is finished with
probability share / the largest share, so shown each taste alike, they give each time in
these proportions): each taste's share of the taste cards among cards 21-40 against its
share of their attention, the issue's "time given to it", and the gaps (mean and largest,
share points); the tastes represented at all in cards 21-40; and the same gaps over
the tastes found only (for a newcomer with two or more in 21-40, their attention
renormalised over those): the sharing apart from the search. Also reported, and not
the target: the gap to each taste's share of the watch time they actually gave over
cards 1-40, which follows what they were shown (a feed showing one taste only has a gap
of 0 to it) and so cannot tell a proportional feed from one that is not. Where the
missing tastes were lost (never shown in cards 1-20; shown, never finished; finished
there) and the gap to attention of the newcomers whose every taste was finished within
cards 1-20 (the sharing apart from the search) are printed too. An oracle (every
card on-taste) and a random feed are the bounds. ``--src PATH`` runs the same newcomers
against another checkout's ``src`` (e.g. a ``git worktree`` of the code before a change)
in the same run.

    python bench/newcomer.py [--quick] [--newcomers 12] [--src ../base/src] [--seed 1]

``--seed`` draws other newcomers (their topics, their several tastes and which cards of a
minor taste they finish); the engine's own draws follow its request ids, which differ
from run to run anyway. Single runs are noisy: compare codes in the same run, over seeds.

Prints a table and writes ``bench/results/newcomer.json`` (``newcomer_quick`` for
``--quick``). Nothing here asserts on timings or shares: it measures.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import (
    REPO_ROOT,
    Server,
    console,
    exit_on_sigterm,
    ingest_all,
    machine_info,
    percentiles,
    print_table,
    utc_now_iso,
    write_json,
)
from fyp.config import Settings
from fyp.engine import Engine
from fyp.eval.simulate import SimVideo, UserState, World, build_world, reaction_events
from fyp.types import now_ms

SKIP_MS = 1_000  # a newcomer's skip of an off-taste card
CARDS = 40  # cards each newcomer sees: 30 for the shares, 10 more for "half of the next ten"
PAGE_MODE_COUNT = 10
# A person spends a second or more on a card; the server learns an event milliseconds
# after acknowledging it (more on a loaded machine). So after each view the bench waits
# until /healthz says every logged event is learned (at most this long): what a person's
# next feed would see, whatever the machine's load.
LEARN_WAIT_S = 2.0
WINDOWS = ((0, 10), (10, 20), (20, 30))


# --------------------------------------------------------------------------- the world


def background_events(world: World, views: int, now: int, seed: int) -> list[dict[str, object]]:
    """``views`` views per background user, 70% from their favourite topics and 30% from
    anywhere (both favouring better videos), with the reactions their hidden tastes give
    (likes, follows and all), spread over the three days before ``now``."""
    rng = np.random.default_rng(seed)
    by_topic = [np.flatnonzero(world.video_topic == t) for t in range(world.n_topics)]
    weight = np.exp(world.video_quality)
    out: list[dict[str, object]] = []
    n = 0
    for user in world.users:
        state = UserState()
        ts = now - 3 * 86_400_000 + int(rng.integers(0, 2 * 86_400_000))
        for _ in range(views):
            if rng.random() < 0.7:
                pool = by_topic[int(rng.choice(user.favourite_topics))]
            else:
                pool = np.arange(len(world.videos))
            if len(pool) == 0:
                continue
            p = weight[pool] / weight[pool].sum()
            video = world.videos[int(rng.choice(pool, p=p))]
            reaction = user.react(video, rng, state)
            state.record(video, reaction)
            ts += reaction.watch_ms + int(rng.integers(300, 1_500))
            for event in reaction_events(reaction, user.user_id, video.video_id, ts, None):
                n += 1
                out.append({"event_id": f"bg-{n:08d}", **event})
    return out


def build_data_dir(data_dir: Path, world: World, views: int, now: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    engine = Engine.open(Settings(data_dir=data_dir), replay=False)
    try:
        engine.upsert_videos([v.as_video() for v in world.videos])
        events = background_events(world, views, now, seed=world.seed + 1)
        ingest_all(engine, events, now)
    finally:
        engine.close()
    return {"events": len(events), "build_s": time.perf_counter() - t0}


def newcomer_topics(world: World, n: int, seed: int, min_videos: int) -> list[int]:
    """``n`` dominant topics, spread over the topics with at least ``min_videos``
    videos (round-robin over a seeded shuffle)."""
    counts = np.bincount(world.video_topic, minlength=world.n_topics)
    eligible = [int(t) for t in np.flatnonzero(counts >= min_videos)]
    order = list(np.random.default_rng(seed).permutation(eligible))
    return [int(order[i % len(order)]) for i in range(n)]


# --------------------------------------------------------------------------- fetch patterns


def player_pattern(src: Path) -> tuple[int, int | None]:
    """(page size, prefetch point) of the web player shipped in ``src``; the prefetch
    point is None for a player that asks for the rest of its last page again on every
    new card (``after=``): ``PAGE`` is then the cards it keeps ready."""
    js = (src / "fyp" / "web" / "static" / "player.js").read_text()
    page = re.search(r"const PAGE = (\d+);", js)
    if page is None:
        raise RuntimeError(f"PAGE not found in {src}'s player.js")
    if "&after=" in js:
        return int(page.group(1)), None
    prefetch = re.search(r"const PREFETCH_AT = (\d+);", js)
    if prefetch is None:
        raise RuntimeError(f"PREFETCH_AT not found in {src}'s player.js")
    return int(page.group(1)), int(prefetch.group(1))


class Newcomer:
    """One newcomer's session against a server: cards seen, events posted."""

    def __init__(
        self, client: Any, world: World, user_id: str, tastes: dict[int, float], seed: int
    ) -> None:
        """``tastes``: topic -> share of the person's attention; a card of a taste is
        watched to the end with probability share / the largest share, else skipped."""
        self.client = client
        self.world = world
        self.user_id = user_id
        top = max(tastes.values())
        self.finish_p = {t: w / top for t, w in tastes.items()}
        self.rng = np.random.default_rng(seed)
        self.watched_ms: list[int] = []
        self.cards: list[SimVideo] = []
        self.reasons: list[str] = []
        self.sources: list[str] = []
        self._request: list[str | None] = []
        self._page_len = 0  # cards of the last page, at the end of ``cards``
        self._n = 0
        self.learned_wait_s: list[float] = []

    def fetch(self, count: int, after: tuple[str, int] | None = None) -> int:
        """A page of ``count`` appended; ``after``: (request id, cards of it shown): the
        cards after those are withdrawn and the page takes their place."""
        params: dict[str, object] = {"user_id": self.user_id, "count": count}
        if after is not None:
            params.update(after=after[0], shown=after[1])
        resp = self.client.get("/v1/feed", params=params)
        resp.raise_for_status()
        body = resp.json()
        if after is not None:
            keep = len(self.cards) - self._page_len + after[1]
            del self.cards[keep:], self.reasons[keep:], self.sources[keep:], self._request[keep:]
        self._page_len = len(body["items"])
        for item in body["items"]:
            self.cards.append(self.world.video(item["video_id"]))
            self.reasons.append(str(item.get("reason", "")))
            self.sources.append(str(item.get("source", "")))
            self._request.append(body.get("request_id"))
        return len(body["items"])

    def watch(self, i: int) -> None:
        """Watch card ``i`` (to the end if on-taste, else 1 s) and post its view."""
        video = self.cards[i]
        p = self.finish_p.get(video.topic, 0.0)
        on = p >= 1.0 or (p > 0.0 and self.rng.random() < p)
        watch_ms = video.duration_ms if on else min(SKIP_MS, video.duration_ms)
        self.watched_ms.append(watch_ms)
        self._n += 1
        event = {
            "event_id": f"{self.user_id}-{self._n}",
            "user_id": self.user_id,
            "video_id": video.video_id,
            "type": "view",
            "ts": now_ms(),
            "watch_ms": watch_ms,
            "surface": "for_you",
        }
        if self._request[i] is not None:
            event["request_id"] = self._request[i]
        resp = self.client.post("/v1/events", json={"events": [event]})
        resp.raise_for_status()
        if resp.json().get("accepted") != 1:
            raise RuntimeError(f"view not accepted: {resp.text}")
        self.learned_wait_s.append(self._wait_learned())

    def _wait_learned(self) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < LEARN_WAIT_S:
            if self.client.get("/healthz").json().get("learning_lag", 0) == 0:
                break
            time.sleep(0.005)
        return time.perf_counter() - t0

    def run_player(self, page: int, prefetch_at: int | None) -> None:
        """The web player's loop: the first page; then, per swipe, the view of the card
        left is posted (and acknowledged), and the next page is asked for once at most
        ``prefetch_at`` cards remain after the new current card; with ``prefetch_at``
        None, the rest of the last page is asked for again on every new card (``after``:
        its request id and its cards shown so far, ``count`` the page)."""
        if prefetch_at is None:
            self._run_rerank(page)
            return
        self.fetch(page)
        index = 0
        if len(self.cards) - 1 - index <= prefetch_at:
            self.fetch(page)
        while index + 1 < CARDS:
            self.watch(index)
            if index + 1 >= len(self.cards) and not self.fetch(page):
                break
            index += 1
            if len(self.cards) - 1 - index <= prefetch_at:
                self.fetch(page)
        self.cards = self.cards[:CARDS]

    def _run_rerank(self, page: int) -> None:
        """player.js's refill: a first page of ``page``; on each new card, once its
        predecessor's view is acknowledged, the cards after it are asked for again."""
        if not self.fetch(page):
            return
        index = 0
        while index + 1 < CARDS:
            self.watch(index)
            last = (self._request[-1] or "", self._page_len)
            if index + 1 >= len(self.cards) and not self.fetch(page, last):
                break  # (after a short page the player asks again; nothing came)
            index += 1
            first = len(self.cards) - self._page_len
            self.fetch(page, (self._request[-1] or "", index + 1 - first))
        self.cards = self.cards[:CARDS]

    def run_pages(self) -> None:
        """Page by page: the next page is asked for after the last card's view."""
        while len(self.cards) < CARDS:
            start = len(self.cards)
            if not self.fetch(PAGE_MODE_COUNT):
                break
            for i in range(start, len(self.cards)):
                self.watch(i)
        self.cards = self.cards[:CARDS]


# --------------------------------------------------------------------------- measures


def on_taste(cards: list[SimVideo], topic: int) -> list[bool]:
    return [v.topic == topic for v in cards]


def topic_entropy(topics: list[int]) -> float:
    """Shannon entropy (nats) of the topics of a window of cards."""
    _, counts = np.unique(topics, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def entropy_windows(sessions: list[list[int]]) -> dict[str, Any]:
    """Each window of ten cards' topic entropy: the median over newcomers, and the
    lowest of any newcomer's window after the first (the floor as measured)."""
    per = [[topic_entropy(t[a : a + 10]) for a in range(0, CARDS, 10)] for t in sessions]
    windows = {
        f"cards_{a + 1}_{a + 10}": float(np.median([w[k] for w in per]))
        for k, a in enumerate(range(0, CARDS, 10))
    }
    return {"median": windows, "min_after_first_10": float(min(min(w[1:]) for w in per))}


def taste_shares(n: Newcomer, tastes: dict[int, float]) -> dict[str, Any]:
    """A newcomer of several tastes: each taste's share of the on-taste cards among
    cards 21-40, against its share of the watch time given to the tastes (cards 1-40)."""
    time = {t: 0.0 for t in tastes}
    for v, ms in zip(n.cards, n.watched_ms, strict=False):
        if v.topic in time:
            time[v.topic] += ms
    late = [v.topic for v in n.cards[20:40] if v.topic in tastes]
    total_time = sum(time.values()) or 1.0
    return {
        "tastes": {str(t): w for t, w in tastes.items()},
        "on_taste_21_40": len(late) / 20,
        "represented_21_40": sum(t in late for t in tastes) / len(tastes),
        "card_share": {str(t): (late.count(t) / len(late) if late else 0.0) for t in tastes},
        "card_topics": [v.topic for v in n.cards[:CARDS]],
        "sources": n.sources[:CARDS],
        "time_share": {str(t): time[t] / total_time for t in tastes},
        "finished": [
            int(ms >= v.duration_ms) for v, ms in zip(n.cards, n.watched_ms, strict=False)
        ],
    }


def _gaps(several: list[dict[str, Any]], against: str) -> list[float]:
    return [abs(x["card_share"][t] - x[against][t]) for x in several for t in x["card_share"]]


def _gaps_among_found(several: list[dict[str, Any]]) -> list[float]:
    """The gaps to attention of the newcomers with two or more tastes in cards 21-40,
    over those tastes, their attention renormalised over them: how the feed shares a
    page between tastes it has found, apart from whether it found them."""
    out: list[float] = []
    for x in several:
        found = [t for t, share in x["card_share"].items() if share > 0]
        if len(found) >= 2:
            total = sum(x["tastes"][t] for t in found)
            out += [abs(x["card_share"][t] - x["tastes"][t] / total) for t in found]
    return out


def swipes_to_half(hits: list[bool]) -> float:
    """Fewest swipes after which at least half of the next ten cards are on-taste
    (inf if never within the cards seen)."""
    for s in range(len(hits) - 9):
        if sum(hits[s : s + 10]) >= 5:
            return float(s)
    return float("inf")


def summarise(name: str, sessions: list[list[bool]]) -> dict[str, Any]:
    shares = {
        f"cards_{a + 1}_{b}": float(np.median([np.mean(h[a:b]) for h in sessions]))
        for a, b in WINDOWS
    }
    means = {
        f"cards_{a + 1}_{b}": float(np.mean([np.mean(h[a:b]) for h in sessions]))
        for a, b in WINDOWS
    }
    swipes = [swipes_to_half(h) for h in sessions]
    finite = np.isfinite(swipes)
    return {
        "name": name,
        "newcomers": len(sessions),
        "median_on_taste_share": shares,
        "mean_on_taste_share": means,
        "median_11_20_interval": median_interval([float(np.mean(h[10:20])) for h in sessions]),
        "taste_in_1_10": float(np.mean([any(h[:10]) for h in sessions])),
        "swipes_to_half": {
            "median": _pct(swipes, 50),
            "p90": _pct(swipes, 90),
            "never": int((~finite).sum()),
        },
        "per_newcomer_hits": [[int(x) for x in h] for h in sessions],
    }


def median_interval(values: list[float], resamples: int = 2_000) -> list[float]:
    """A 95% bootstrap interval of the median over newcomers: how far another sample of
    as many newcomers could put it (a median over a few dozen newcomers whose shares are
    near 10% or near 80% swings between the two)."""
    rng = np.random.default_rng(0)
    x = np.asarray(values, dtype=np.float64)
    medians = np.median(x[rng.integers(0, len(x), size=(resamples, len(x)))], axis=1)
    return [float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))]


def _pct(values: list[float], q: float) -> float | None:
    v = float(np.percentile(values, q, method="inverted_cdf"))
    return v if np.isfinite(v) else None


def bounds(world: World, topics: list[int], seed: int) -> list[dict[str, Any]]:
    oracle = [[True] * CARDS for _ in topics]
    rng = np.random.default_rng(seed)
    random = [
        [int(world.video_topic[r]) == t for r in rng.permutation(len(world.videos))[:CARDS]]
        for t in topics
    ]
    return [summarise("oracle", oracle), summarise("random", random)]


# --------------------------------------------------------------------------- main


def summarise_tastes(several: list[dict[str, Any]]) -> dict[str, Any]:
    """How close each taste's share of the taste cards among cards 21-40 is to its share
    of the person's attention (``tastes``: the time they give it, shown each taste alike;
    the target), and to its share of the watch time they gave over cards 1-40 (which
    follows what they were shown: not the target); the mean and largest gaps (share
    points) over tastes and newcomers, and the share of tastes with a card in 21-40."""
    gaps = _gaps(several, "time_share")
    intended = _gaps(several, "tastes")
    found = _gaps_among_found(several)
    return {
        "newcomers": len(several),
        "mean_gap_to_watch_time": float(np.mean(gaps)),
        "max_gap_to_watch_time": float(np.max(gaps)),
        "mean_gap_to_attention": float(np.mean(intended)),
        "max_gap_to_attention": float(np.max(intended)),
        "represented_21_40": float(np.mean([x["represented_21_40"] for x in several])),
        "mean_gap_among_found": float(np.mean(found)) if found else None,
        "max_gap_among_found": float(np.max(found)) if found else None,
        "median_on_taste_21_40": float(np.median([x["on_taste_21_40"] for x in several])),
        **taste_search(several),
        "per_newcomer": several,
    }


def taste_search(several: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the tastes missing from cards 21-40 were lost, and how the tastes found
    early are shared: each missing taste by what cards 1-20 did with it (never shown;
    shown, never finished; finished); the gap to attention of the newcomers all of
    whose tastes were finished within cards 1-20 (the sharing when the search did its
    part: the measure's floor for this feed); and discovery's cards in 11-40 per
    newcomer (the search's budget after the first find)."""
    lost = {"never_shown_1_20": 0, "shown_not_finished_1_20": 0, "finished_1_20": 0}
    early: list[float] = []
    early_newcomers = 0
    for x in several:
        topics, finished = x["card_topics"], x["finished"]
        late = set(topics[20:40])
        first_20 = set(topics[:20])
        finished_20 = {t for t, f in zip(topics[:20], finished[:20], strict=False) if f}
        for t in x["tastes"]:
            if int(t) in late:
                continue
            if int(t) not in first_20:
                lost["never_shown_1_20"] += 1
            elif int(t) not in finished_20:
                lost["shown_not_finished_1_20"] += 1
            else:
                lost["finished_1_20"] += 1
        if all(int(t) in finished_20 for t in x["tastes"]):
            early_newcomers += 1
            early += [abs(x["card_share"][t] - w) for t, w in x["tastes"].items()]
    return {
        "missing_21_40": lost,
        "all_found_by_20": early_newcomers,
        "mean_gap_all_found_by_20": float(np.mean(early)) if early else None,
        "max_gap_all_found_by_20": float(np.max(early)) if early else None,
        "discover_cards_11_40": float(
            np.mean([x["sources"][10:40].count("discover") for x in several])
        ),
    }


def several_tastes(world: World, n: int, seed: int, min_videos: int) -> list[dict[int, float]]:
    """``n`` newcomers of two or three tastes (alternately), each a share of attention:
    (0.6, 0.4) or (0.5, 0.3, 0.2), over distinct topics with at least ``min_videos``."""
    counts = np.bincount(world.video_topic, minlength=world.n_topics)
    eligible = [int(t) for t in np.flatnonzero(counts >= min_videos)]
    rng = np.random.default_rng(seed)
    out: list[dict[int, float]] = []
    for i in range(n):
        shares = (0.6, 0.4) if i % 2 == 0 else (0.5, 0.3, 0.2)
        picked = rng.choice(eligible, size=len(shares), replace=False)
        out.append({int(t): w for t, w in zip(picked, shares, strict=True)})
    return out


def run_code(
    label: str,
    src: Path,
    seed_dir: Path,
    root: Path,
    world: World,
    topics: list[int],
    modes: list[str],
    multi: list[dict[int, float]],
    seed: int = 0,
) -> list[dict[str, Any]]:
    page, prefetch_at = player_pattern(src)
    out: list[dict[str, Any]] = []
    for mode in modes:
        data_dir = root / f"data-{label}-{mode}"
        shutil.copytree(seed_dir, data_dir)
        secret = seed_dir.with_name(seed_dir.name + ".secret")  # beside, never inside
        shutil.copy(secret, data_dir.with_name(data_dir.name + ".secret"))
        env = {"PYTHONPATH": str(src)}
        sessions: list[list[bool]] = []
        reasons: list[list[str]] = []
        sources: list[list[str]] = []
        card_topics: list[list[int]] = []
        waits: list[float] = []
        with (
            Server(data_dir, root / f"server-{label}-{mode}.log", env=env) as server,
            server.client(30.0) as client,
        ):
            for i, topic in enumerate(topics):
                user = f"new-{label}-{mode}-{i:03d}"
                client.put(f"/v1/users/{user}", json={}).raise_for_status()
                n = Newcomer(client, world, user, {topic: 1.0}, seed=i + 10_000 * seed)
                if mode == "player":
                    n.run_player(page, prefetch_at)
                else:
                    n.run_pages()
                sessions.append(on_taste(n.cards, topic))
                reasons.append(n.reasons[:CARDS])
                sources.append(n.sources[:CARDS])
                card_topics.append([v.topic for v in n.cards])
                waits += n.learned_wait_s
            several: list[dict[str, Any]] = []
            for i, tastes in enumerate(multi if mode == "player" else []):
                user = f"multi-{label}-{i:03d}"
                client.put(f"/v1/users/{user}", json={}).raise_for_status()
                n = Newcomer(client, world, user, tastes, seed=1_000 + i + 10_000 * seed)
                n.run_player(page, prefetch_at)
                several.append(taste_shares(n, tastes))
        s = summarise(f"{label} {mode}", sessions)
        s["topic_entropy"] = entropy_windows(card_topics)
        if several:
            s["several_tastes"] = summarise_tastes(several)
        s.update(
            code=label,
            src=str(src),
            mode=mode,
            player_page=page,
            player_prefetch_at=prefetch_at,
            learned_wait_ms=percentiles([w * 1e3 for w in waits]),
            reasons=reasons,
            sources=sources,
            card_topics=card_topics,
            newcomer_topics=topics,
        )
        out.append(s)
        console.print(f"  {s['name']}: {s['median_on_taste_share']} {s['swipes_to_half']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run")
    ap.add_argument("--newcomers", type=int, default=None)
    ap.add_argument("--src", type=Path, action="append", default=[], help="another src tree")
    ap.add_argument("--modes", default="player,page", help="fetch patterns: player, page")
    ap.add_argument("--data-root", type=Path, default=None, help="where to put the data dirs")
    ap.add_argument(
        "--several", type=int, default=8, help="newcomers of two or three tastes (player mode)"
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="draws other newcomers (topics, tastes, their finishes); 0: the runs before it",
    )
    args = ap.parse_args()
    exit_on_sigterm()
    modes = [m.strip() for m in args.modes.split(",") if m.strip() in ("player", "page")]
    n_videos, n_users, views = 5_000, 300, 40
    newcomers = args.newcomers or (6 if args.quick else 12)
    root = Path(tempfile.mkdtemp(prefix="fyp-bench-newcomer-", dir=args.data_root))
    now = now_ms()
    world = build_world(seed=20, n_videos=n_videos, n_topics=20, n_users=n_users, now_ms=now)
    topics = newcomer_topics(world, newcomers, seed=20 + args.seed, min_videos=100)
    multi = several_tastes(world, args.several, seed=22 + args.seed, min_videos=100)
    payload: dict[str, Any] = {
        "benchmark": "newcomer",
        "quick": args.quick,
        "started_at": utc_now_iso(),
        "machine": machine_info(root),
        "params": {
            "videos": n_videos,
            "topics": world.n_topics,
            "background_users": n_users,
            "background_views_per_user": views,
            "newcomers": newcomers,
            "seed": args.seed,
            "newcomer_topics": [world.topic_names[t] for t in topics],
            "several_tastes": [{world.topic_names[t]: w for t, w in m.items()} for m in multi],
            "cards": CARDS,
            "skip_ms": SKIP_MS,
            "page_mode_count": PAGE_MODE_COUNT,
            "learn_wait_max_s": LEARN_WAIT_S,
        },
        "results": [],
    }
    try:
        seed_dir = root / "seed"
        console.print(f"[bold]{n_videos:,} videos[/], {n_users} users x {views} views: building")
        payload["setup"] = build_data_dir(seed_dir, world, views, now)
        payload["results"] += bounds(world, topics, seed=21)
        codes = [("this", REPO_ROOT / "src")] + [
            (f"src{i + 1}", p.resolve()) for i, p in enumerate(args.src)
        ]
        for label, src in codes:
            payload["results"] += run_code(
                label, src, seed_dir, root, world, topics, modes, multi, args.seed
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    path = write_json("newcomer_quick" if args.quick else "newcomer", payload)
    rows, taste_rows, search_rows = [], [], []
    for r in payload["results"]:
        sh, sw = r["median_on_taste_share"], r["swipes_to_half"]
        fetch = ""
        if r.get("mode") == "player":
            fetch = f"{r['player_page']}/{r['player_prefetch_at'] or 'after'}"
        entropy = r.get("topic_entropy")
        rows.append(
            [
                r["name"],
                fetch,
                *(f"{100 * sh[k]:.0f}%" for k in ("cards_1_10", "cards_11_20", "cards_21_30")),
                "{:.0f}-{:.0f}%".format(*(100 * x for x in r["median_11_20_interval"])),
                f"{100 * r['mean_on_taste_share']['cards_11_20']:.0f}%",
                f"{100 * r['taste_in_1_10']:.0f}%",
                _fmt(sw["median"]),
                _fmt(sw["p90"]),
                str(sw["never"]),
                "" if entropy is None else f"{entropy['median']['cards_21_30']:.2f}",
                "" if entropy is None else f"{entropy['min_after_first_10']:.2f}",
            ]
        )
        if "several_tastes" in r:
            t = r["several_tastes"]
            taste_rows.append(
                [
                    r["name"],
                    str(t["newcomers"]),
                    f"{100 * t['median_on_taste_21_40']:.0f}%",
                    f"{100 * t['represented_21_40']:.0f}%",
                    f"{100 * t['mean_gap_to_attention']:.0f}",
                    f"{100 * t['max_gap_to_attention']:.0f}",
                    _points(t["mean_gap_among_found"]),
                    _points(t["max_gap_among_found"]),
                    f"{100 * t['mean_gap_to_watch_time']:.0f}",
                    f"{100 * t['max_gap_to_watch_time']:.0f}",
                ]
            )
            lost = t["missing_21_40"]
            search_rows.append(
                [
                    r["name"],
                    str(sum(len(x["tastes"]) for x in t["per_newcomer"])),
                    str(sum(lost.values())),
                    str(lost["never_shown_1_20"]),
                    str(lost["shown_not_finished_1_20"]),
                    str(lost["finished_1_20"]),
                    f"{t['discover_cards_11_40']:.1f}",
                    str(t["all_found_by_20"]),
                    _points(t["mean_gap_all_found_by_20"]),
                    _points(t["max_gap_all_found_by_20"]),
                ]
            )
    print_table(
        "A newcomer's feed: on-taste share (median over newcomers)",
        [
            "feed",
            "page/prefetch",
            "cards 1-10",
            "11-20",
            "21-30",
            "11-20 median, 95%",
            "11-20 mean",
            "taste in 1-10",
            "swipes to half (p50)",
            "p90",
            "never",
            "entropy 21-30",
            "entropy min",
        ],
        rows,
        caption=f"{newcomers} newcomers, one dominant topic each; the median's bootstrap interval "
        "over newcomers; taste in 1-10: the newcomers shown their topic in cards 1-10 (page by "
        "page, only they can get it in 11-20); topic entropy (nats) per ten cards: the median "
        f"of cards 21-30, the lowest window after card 10; written to {path}",
    )
    if taste_rows:
        print_table(
            "Newcomers of two or three tastes (player): each taste's share of the taste "
            "cards among cards 21-40 against its share of their attention",
            [
                "feed",
                "newcomers",
                "on a taste, 21-40",
                "tastes represented",
                "gap to attention: mean (points)",
                "largest",
                "among tastes found: mean",
                "largest",
                "(gap to watch time given: mean",
                "largest)",
            ],
            taste_rows,
        )
        print_table(
            "Newcomers of two or three tastes: the tastes missing from cards 21-40, by what "
            "cards 1-20 did with them; the sharing when every taste was finished by card 20",
            [
                "feed",
                "tastes",
                "missing",
                "never shown in 1-20",
                "shown, not finished",
                "finished",
                "discover cards 11-40 (mean)",
                "newcomers, all found by 20",
                "their gap to attention: mean",
                "largest",
            ],
            search_rows,
        )


def _points(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.0f}"


def _fmt(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}"


if __name__ == "__main__":
    main()
