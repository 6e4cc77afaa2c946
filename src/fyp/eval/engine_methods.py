"""The engine as evaluation methods: trained by replaying the training rows through its own
ingestion and learning path (the code that serves), then frozen for the test period.

One trained engine answers as several methods, each a row of the report:

* ``fyp``: the whole serving pipeline (candidate sources, filters, ranker, exploration,
  spacing) asked for a page of ``k`` at the user's first test request, with no side
  effects; on impressions, the ranker's value score (Σ weight × P(label)), which is what
  orders a page.
* ``fyp_first_ranker``: the first ranker alone over every eligible video (no candidate
  sources); on impressions, its head for each label (P(long_view), P(finish), P(like));
  KuaiRand's click has no head, so its value score.
* ``fyp_mmoe``: the learned multi-task ranker (``fyp.model``), trained online during the
  replay; it re-ranks the first ranker's best thousand videos, and on impressions answers
  with its head for each label.
* ``fyp_no_explore``, ``fyp_no_spacing``, ``fyp_no_explore_no_spacing``: the serving
  pipeline with its exploration slots (new uploads' and a newcomer's discovery cards
  moved into the page) and/or its spacing rules (no two consecutive videos from one
  creator or with one sound; at most ``max_per_creator`` of a creator per page) turned
  off: the price of a responsible feed, on the same metrics. Without slots, the fresh
  and discover candidates stay in the pool and compete on the ranker's score; without
  spacing, the page is the ranked pool in order (the sequence rules, a safety
  guarantee, still hold).
* ``fyp_two_tower``: the learned two-tower retrieval alone, trained online during the
  replay: every video by its item vector's inner product with the user's vector (exact,
  not through the ANN index); on impressions, that inner product. Retrieval learns which
  videos a user engages with among all of them (a softmax over the catalog), where the
  rankers learn a rate given an impression: this row shows what the candidate source
  knows before any ranker reorders it.

``fyp`` runs the engine with its learned models and its page scorer on (``[model]
enabled``, ``[scorer] enabled``, whatever the configuration says): the pipeline's ranker
is the learned cascade once warm, two-tower retrieval is among its sources, and the page
scorer orders the page once it has trained. ``fyp_no_scorer`` is the page ordered by the
cascade underneath the scorer.

Nothing from the test period reaches the engine: it ingests only :class:`Train` rows, and
the evaluation's requests carry times, users and pages, never outcomes.
"""

from __future__ import annotations

import dataclasses
import itertools
import pickle
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fyp.config import Settings, load_settings
from fyp.engine import Engine
from fyp.eval.kuairand import ImportSummary, import_kuairand
from fyp.eval.methods import FloatArray, IntArray, Method, _impression_groups, top_rows
from fyp.eval.protocol import IMPRESSION_LABELS, Catalog, Requests, Train, end_of_local_day
from fyp.pipeline import FeedPipeline, PipelineCounters
from fyp.privacy.pseudonym import Pseudonyms
from fyp.rank.page_scorer import PageScoredRanker
from fyp.rerank.diversity import CreatorSoundSpacing
from fyp.rerank.exploration import ExplorationSlots
from fyp.retrieve.base import FeedContext
from fyp.state.feedback import LABEL_INDEX
from fyp.types import DEFAULT_SURFACE, Candidate

if TYPE_CHECKING:
    from fyp.model.online import OnlineModels

__all__ = [
    "ABLATIONS",
    "ENGINE_METHODS",
    "EngineModel",
    "FypFirstRanker",
    "FypPipeline",
    "FypTwoTower",
]

ENGINE_METHODS: tuple[str, ...] = (
    "fyp",
    "fyp_no_explore",
    "fyp_no_spacing",
    "fyp_no_explore_no_spacing",
    "fyp_no_scorer",
    "fyp_first_ranker",
    "fyp_mmoe",
    "fyp_two_tower",
)
# The served page with what makes it responsible, or its page scorer, turned off: run
# when named.
ABLATIONS: tuple[str, ...] = (
    "fyp_no_explore",
    "fyp_no_spacing",
    "fyp_no_explore_no_spacing",
    "fyp_no_scorer",
)
SHORTLIST = 1_000  # fyp_mmoe's first stage


class EngineModel:
    """A fresh engine in a temporary directory, fed the training rows."""

    def __init__(
        self,
        data_dir: Path,
        config: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
        on_open: Callable[[Engine], None] | None = None,
    ) -> None:
        self.kuairand_dir = data_dir
        self.config = config
        self.progress = progress
        # Called with the new engine before it reads a training row: a benchmark that
        # listens to the learning step (bench/tree_gauc.py) subscribes here.
        self.on_open = on_open
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.engine: Engine | None = None
        self.summary: ImportSummary | None = None
        self.to_engine = np.zeros(0, dtype=np.intp)
        # The page scorer's boundaries during training (when it is on): for the report.
        self.scorer_retrains: list[dict[str, Any]] = []
        self.scorer_bytes = 0

    def settings(self, store: Path) -> Settings:
        overrides: dict[str, Any] = {
            "data_dir": store,
            # Every user of the evaluated log is this deployment's, trained on or not;
            # a known secret, so that every run gives the same figures.
            "privacy": {
                "require_registered_users": False,
                "secret_file": Pseudonyms.write_known_secret(
                    store.with_name("secret"), "kuairand-evaluation"
                ),
            },
        }
        settings = load_settings(self.config, overrides, environ={})
        # Every model the engine has is evaluated, whether or not it serves by default.
        # The page scorer's boundaries at the app's local midnight (UTC+8), where the
        # evaluation's days begin.
        return settings.model_copy(
            update={
                "model": settings.model.model_copy(update={"enabled": True}),
                "scorer": settings.scorer.model_copy(
                    update={"enabled": True, "offset_hours": 16.0}
                ),
            }
        )

    def fit(self, catalog: Catalog, train: Train) -> Engine:
        if self.engine is not None:
            return self.engine
        self._tmp = tempfile.TemporaryDirectory(prefix="fyp-eval-")
        engine = Engine.open(self.settings(Path(self._tmp.name) / "store"))
        if self.on_open is not None:
            self.on_open(engine)
        self.summary = import_kuairand(
            engine,
            self.kuairand_dir,
            logs=train.frame,
            videos=catalog.videos,
            progress=self.progress,
        )
        # The clock reaches the end of the last training day (no test row is read): the
        # page scorer's nightly work at that midnight is done, as it would be in service.
        engine.train_page_scorer(end_of_local_day(train.end_ms))
        if engine.page_scorer is not None:
            self.scorer_retrains = [dataclasses.asdict(r) for r in engine.page_scorer.retrains]
            # What the scorer adds to every checkpoint (its pools, mostly).
            self.scorer_bytes = len(pickle.dumps(engine.page_scorer))
        self.to_engine = np.array(
            [engine.catalog.row_of[v.video_id] for v in catalog.videos], dtype=np.intp
        )
        self.engine = engine
        return engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class _EngineMethod(Method):
    def __init__(self, model: EngineModel) -> None:
        self.model = model
        self.seen: dict[str, set[int]] = {}
        self.row_of: dict[str, int] = {}

    @property
    def engine(self) -> Engine:
        if self.model.engine is None:
            raise RuntimeError(f"{self.name}: fit() first")
        return self.model.engine

    @property
    def models(self) -> OnlineModels:
        """The engine's learned models (the evaluation's engine always has them on)."""
        if self.engine.models is None:
            raise RuntimeError(f"{self.name}: the engine runs without learned models")
        return self.engine.models

    def fit(self, catalog: Catalog, train: Train) -> None:
        self.model.fit(catalog, train)
        self.seen = train.seen
        self.row_of = catalog.row_of

    def _scored(
        self, user: str, rows: IntArray, at_ms: int, surface: str = DEFAULT_SURFACE
    ) -> tuple[FloatArray, FloatArray]:
        """(probabilities (n, L), value scores (n,)) for catalog ``rows`` on ``surface``."""
        engine = self.engine
        state = engine.state.user(engine.pseudonym(user))  # as the engine files the user
        scored = engine.state.ranker.score(
            state, self.model.to_engine[rows].tolist(), at_ms, surface
        )
        return np.asarray(scored.probabilities), np.asarray(scored.values)

    def _score_impressions(
        self, requests: Requests, per_label: bool, by_surface: bool = False
    ) -> dict[str, FloatArray]:
        """Each impression scored as of its group's first impression: the head of each
        label with ``per_label`` (the value score for labels without a head), else the
        value score for all."""
        out = {label: np.zeros(len(requests.imp_row)) for label in IMPRESSION_LABELS}
        for user, surface, idx in _impression_groups(requests, by_surface):
            at = int(requests.imp_time_ms[idx].min())
            probabilities, values = self._scored(
                user, requests.imp_row[idx], at, surface or DEFAULT_SURFACE
            )
            for label in IMPRESSION_LABELS:
                head = LABEL_INDEX.get(label) if per_label else None
                out[label][idx] = values if head is None else probabilities[:, head]
        return out


class FypFirstRanker(_EngineMethod):
    name = "fyp_first_ranker"

    def top_k(self, requests: Requests, k: int) -> list[IntArray]:
        every = np.arange(len(self.model.to_engine), dtype=np.int64)
        return [
            top_rows(self._scored(u, every, int(at), s)[1], self.seen.get(u, set()), k)
            for u, at, s in zip(
                requests.users, requests.at_ms.tolist(), requests.surface, strict=True
            )
        ]

    def score_impressions(self, requests: Requests) -> dict[str, FloatArray]:
        # The first ranker reads the page: one group per user and surface.
        return self._score_impressions(requests, per_label=True, by_surface=True)

    def scores_used(self) -> dict[str, str]:
        return {
            label: f"P({label})" if label in LABEL_INDEX else "value" for label in IMPRESSION_LABELS
        }


class _NoSlots(ExplorationSlots):
    """No exploration slots: the ranker's order as it is."""

    def __init__(self) -> None:
        super().__init__("", 0.0)

    def prioritise(
        self,
        ranked: list[Candidate],
        count: int,
        request_id: str,
        also: tuple[str, float] | None = None,
    ) -> list[Candidate]:
        return ranked


class _Unspaced(CreatorSoundSpacing):
    """No spacing: the ranked candidates in order, each admitted by the sequence rules'
    guard (a hard safety rule, not a spacing one) while the page has room."""

    def arrange(
        self,
        ranked: list[Candidate],
        count: int,
        guard: Callable[[Sequence[int], int], bool] | None = None,
        before: Sequence[int] = (),
    ) -> list[Candidate]:
        page: list[Candidate] = []
        rows: list[int] = []
        for candidate in ranked:
            if len(page) == count:
                break
            if guard is None or guard(rows, candidate.row):
                page.append(candidate)
                rows.append(candidate.row)
        return page


class FypPipeline(_EngineMethod):
    """The serving pipeline (see the module docstring); ``explore`` and ``spacing``
    False turn its exploration slots and its spacing off.

    ``extra[user]``: ask for that many more than ``k`` and keep the first ``k`` the
    protocol allows. An engine that has not learned what the user was shown since it
    was trained (frozen, in the daily walk) would otherwise spend slots of the page on
    videos the protocol rules out, and be judged on a shorter list."""

    def __init__(
        self,
        model: EngineModel,
        *,
        explore: bool = True,
        spacing: bool = True,
        scorer: bool = True,
    ) -> None:
        super().__init__(model)
        self.explore = explore
        self.spacing = spacing
        self.scorer = scorer
        self.name = (
            "fyp"
            + ("" if explore else "_no_explore")
            + ("" if spacing else "_no_spacing")
            + ("" if scorer else "_no_scorer")
        )
        self.extra: dict[str, int] = {}
        self._pipeline: FeedPipeline | None = None

    def pipeline(self) -> FeedPipeline:
        if self._pipeline is None:
            # The engine's own pipeline (its ranker and sources), minus side effects:
            # asking must not change what is asked. Request ids numbered, not random:
            # they seed the exploration draws (fresh, discover, their slots), and the
            # same questions must get the same answers.
            ids = itertools.count()
            served = self.engine.pipeline
            ranker = served.ranker
            if not self.scorer and isinstance(ranker, PageScoredRanker):
                ranker = ranker.inner  # the ranker the page scorer re-orders
            self._pipeline = dataclasses.replace(
                served,
                ranker=ranker,
                side_effects=[],
                counters=PipelineCounters(),
                new_request_id=lambda: f"eval-{next(ids):010d}",
                exploration=served.exploration if self.explore else _NoSlots(),
                spacing=(
                    served.spacing
                    if self.spacing
                    else _Unspaced(served.spacing.catalog, served.spacing.max_per_creator)
                ),
            )
        return self._pipeline

    def top_k(self, requests: Requests, k: int) -> list[IntArray]:
        pipeline = self.pipeline()
        row_of = self.row_of
        out: list[IntArray] = []
        for u, at, surface in zip(
            requests.users, requests.at_ms.tolist(), requests.surface, strict=True
        ):
            ask = k + self.extra.get(u, 0)
            feed = pipeline.run(self.engine.pseudonym(u), ask, surface, int(at))
            seen = self.seen.get(u, set())
            rows = [row_of[item.video_id] for item in feed.items]
            # The protocol excludes training videos; the pipeline's own filters already
            # do, but a "repeat" item (nothing unseen left) would not.
            out.append(np.array([r for r in rows if r not in seen][:k], dtype=np.int64))
        return out

    def score_impressions(self, requests: Requests) -> dict[str, FloatArray]:
        """The value score the serving pipeline's ranker gives each impression (the
        learned cascade once warm), asked as one request per user and page."""
        engine = self.engine
        ranker = self.pipeline().ranker
        scores = np.zeros(len(requests.imp_row))
        for user, surface, idx in _impression_groups(requests, by_surface=True):
            at = int(requests.imp_time_ms[idx].min())
            pid = engine.pseudonym(user)
            state = engine.state.user(pid)
            ctx = FeedContext(
                "eval", pid, state, len(idx), surface or DEFAULT_SURFACE,
                engine.state.region_of(state), at,
            )  # fmt: skip
            scores[idx] = ranker.values(ctx, self.model.to_engine[requests.imp_row[idx]].tolist())
        return {label: scores for label in IMPRESSION_LABELS}

    def scores_used(self) -> dict[str, str]:
        return {label: "value" for label in IMPRESSION_LABELS}


class FypMMoE(_EngineMethod):
    """The learned multi-task ranker alone (trained online during the replay), over every
    eligible video; on impressions, its head for each label."""

    name = "fyp_mmoe"

    def _scored(
        self, user: str, rows: IntArray, at_ms: int, surface: str = DEFAULT_SURFACE
    ) -> tuple[FloatArray, FloatArray]:
        engine = self.engine
        pid = engine.pseudonym(user)
        p, v = self.models.ranker.predict(
            pid, engine.state.user(pid), self.model.to_engine[rows].tolist(), at_ms, surface
        )
        return p.astype(np.float64), v.astype(np.float64)

    def top_k(self, requests: Requests, k: int) -> list[IntArray]:
        """Two stages, as in serving: the first ranker's best ``SHORTLIST`` eligible
        videos, re-ranked by the learned model (scoring the whole catalog per user with
        the network would cost minutes and change little: what the first ranker puts
        below its top thousand is not what a person watches)."""
        engine = self.engine
        every = self.model.to_engine.tolist()
        out = []
        for u, at, surface in zip(
            requests.users, requests.at_ms.tolist(), requests.surface, strict=True
        ):
            state = engine.state.user(engine.pseudonym(u))
            first = engine.state.ranker.score(state, every, int(at), surface).values
            shortlist = top_rows(first, self.seen.get(u, set()), SHORTLIST)
            values = self._scored(u, shortlist, int(at), surface)[1]
            out.append(shortlist[top_rows(values, set(), k)])
        return out

    def score_impressions(self, requests: Requests) -> dict[str, FloatArray]:
        # The learned ranker reads the page: one group per user and surface.
        return self._score_impressions(requests, per_label=True, by_surface=True)

    def scores_used(self) -> dict[str, str]:
        return {
            label: f"P({label})" if label in LABEL_INDEX else "value" for label in IMPRESSION_LABELS
        }


class FypTwoTower(_EngineMethod):
    """Two-tower retrieval alone (see the module docstring)."""

    name = "fyp_two_tower"

    def __init__(self, model: EngineModel) -> None:
        super().__init__(model)
        self._items: FloatArray | None = None

    def _item_matrix(self) -> FloatArray:
        """Every evaluated video's item vector (the model is frozen: computed once)."""
        if self._items is None:
            rows = self.model.to_engine.tolist()
            self._items = self.models.retrieval.item_vectors(rows, 0).astype(np.float64)
        return self._items

    def _user_scores(self, user: str, at_ms: int) -> FloatArray:
        pid = self.engine.pseudonym(user)
        history = self.engine.state.user(pid).history  # the tower pools its recent end
        query = self.models.retrieval.user_vector(pid, history, at_ms).astype(np.float64)
        scores: FloatArray = self._item_matrix() @ query
        return scores

    def top_k(self, requests: Requests, k: int) -> list[IntArray]:
        return [
            top_rows(self._user_scores(u, int(at)), self.seen.get(u, set()), k)
            for u, at in zip(requests.users, requests.at_ms.tolist(), strict=True)
        ]

    def score_impressions(self, requests: Requests) -> dict[str, FloatArray]:
        # The towers do not read the page: one group per user.
        scores = np.zeros(len(requests.imp_row))
        for user, _, idx in _impression_groups(requests, by_surface=False):
            at = int(requests.imp_time_ms[idx].min())
            scores[idx] = self._user_scores(user, at)[requests.imp_row[idx]]
        return {label: scores for label in IMPRESSION_LABELS}

    def scores_used(self) -> dict[str, str]:
        return {label: "user·item" for label in IMPRESSION_LABELS}


def make_engine_method(name: str, model: EngineModel) -> Method:
    if name == "fyp":
        return FypPipeline(model)
    if name == "fyp_no_explore":
        return FypPipeline(model, explore=False)
    if name == "fyp_no_spacing":
        return FypPipeline(model, spacing=False)
    if name == "fyp_no_explore_no_spacing":
        return FypPipeline(model, explore=False, spacing=False)
    if name == "fyp_no_scorer":
        return FypPipeline(model, scorer=False)
    if name == "fyp_mmoe":
        return FypMMoE(model)
    if name == "fyp_first_ranker":
        return FypFirstRanker(model)
    if name == "fyp_two_tower":
        return FypTwoTower(model)
    raise ValueError(f"unknown engine method {name!r}; known: {', '.join(ENGINE_METHODS)}")
