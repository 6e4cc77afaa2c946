"""Online against frozen: does learning during the test day help? (The claim the Monolith
paper makes for real-time training.)

The prequential protocol ("predict, then learn"): a fresh engine is trained on the
training rows as in the offline protocol; then the test impressions are walked in time
order, a window at a time. Each window's impressions are first *scored* by the engine as
it is, and only then are the window's log rows — the impressions and the events that
followed them — fed to the engine through its ingestion and learning path, so later
windows are scored by a model that has learned from earlier ones. No impression is ever
scored by a model that saw its own outcome. The same metrics as the frozen rows, so the
two can be compared in one table: ``<ranker>_online`` against ``<ranker>`` (frozen at
the end of training).

Two more rows hold back part of what the walk learns, each user's own state:

* ``fyp_first_ranker_online_own_state_frozen``: each user is scored with their own state
  (label rates, affinities, follows) as it was at the end of training, while everything
  else (the videos' and the surfaces' statistics, the global rates, the ranker's
  weights) learns the test day;
* ``fyp_first_ranker_online_session_state``: each user is scored with their own state as
  it was when their session began (:func:`fyp.eval.protocol.impression_sessions`): what
  they did in earlier sessions is learned, what they do in this one is not yet.

Why: GAUC compares one user's impressions with each other, and a score that learns from
the same user's outcomes within the compared group is biased *against* its own label.
Of one user's n impressions with P positives, a positive's other impressions hold P − 1
positives and a negative's hold P; a state that has learned from some of them is, on
average, lower before a positive. With KuaiRand's few impressions per user and test day
this is large: the online walk's change to a user's own score, alone, ranks their day's
long views at GAUC 0.13. Scores from one state of the user per group are free of it:
the frozen rows everywhere, and the session row on ``gauc_session_long_view``.

This deliberately hands test outcomes to the engine, after scoring: it lives apart from
the offline methods, which never receive them.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable

import numpy as np

from fyp.eval.engine_methods import EngineModel
from fyp.eval.kuairand import replay_rows
from fyp.eval.methods import FloatArray, _impression_groups
from fyp.eval.protocol import IMPRESSION_LABELS, EvalData, impression_sessions
from fyp.state.feedback import LABEL_INDEX
from fyp.state.users import UserState
from fyp.types import DEFAULT_SURFACE

__all__ = ["ONLINE_ROWS", "prequential_scores"]

ONLINE_ROWS: tuple[str, ...] = (
    "fyp_first_ranker_online",
    "fyp_mmoe_online",
    "fyp_first_ranker_online_own_state_frozen",
    "fyp_first_ranker_online_session_state",
)
WINDOW_MS = 60_000  # score a minute of impressions, then learn from it


def prequential_scores(
    data: EvalData,
    model: EngineModel,
    window_ms: int = WINDOW_MS,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, FloatArray]]:
    """Per row of ``ONLINE_ROWS`` and label, each test impression's score, given by an
    engine that has learned from every test window before the impression's own.

    ``model``: the engine trained on ``data``'s training rows (fitted here if it is not
    yet; the offline run passes the one its frozen rows were scored with, which asking
    did not change). It learns the test day, so it is of no further use frozen."""
    engine = model.fit(data.catalog, data.train)
    if engine.models is None:
        raise RuntimeError("the prequential run needs the learned models")
    req = data.requests
    n = len(req.imp_row)
    out = {name: {label: np.zeros(n) for label in IMPRESSION_LABELS} for name in ONLINE_ROWS}
    # Each test user's own state as training left it (a copy: the walk changes the live one).
    own_state = {
        user: copy.deepcopy(engine.state.user(engine.pseudonym(user)))
        for user in sorted(set(req.imp_user.tolist()))
    }
    # Each user's state as their current session began: (session, copy).
    sessions = impression_sessions(req.imp_user, req.imp_time_ms)
    session_state: dict[str, tuple[int, UserState]] = {}
    times = req.imp_time_ms
    order = np.argsort(times, kind="stable")
    window = (times[order] - times[order[0]]) // window_ms if n else np.zeros(0, np.int64)
    bounds = np.flatnonzero(np.r_[True, window[1:] != window[:-1], True])
    to_engine = model.to_engine
    frame = data.outcomes.frame
    for w, (start, end) in enumerate(itertools.pairwise(bounds.tolist())):
        idx = order[start:end]
        # 1. predict, with what the engine knows now
        window_requests = dataclasses.replace(
            req,
            imp_user=req.imp_user[idx],
            imp_row=req.imp_row[idx],
            imp_time_ms=times[idx],
            imp_surface=[req.imp_surface[i] for i in idx.tolist()],
        )
        for user, surface, sub in _impression_groups(window_requests, by_surface=True):
            at = int(window_requests.imp_time_ms[sub].min())
            pid = engine.pseudonym(user)  # how the engine files the user
            state = engine.state.user(pid)
            rows = to_engine[window_requests.imp_row[sub]].tolist()
            page = surface or DEFAULT_SURFACE
            first = engine.state.ranker.score(state, rows, at, page)
            held = engine.state.ranker.score(own_state[user], rows, at, page)
            session = int(sessions[idx[sub[0]]])  # a minute never spans two sessions
            held_since = session_state.get(user)
            if held_since is None or held_since[0] != session:
                held_since = session_state[user] = (session, copy.deepcopy(state))
            by_session = engine.state.ranker.score(held_since[1], rows, at, page)
            learned_p, learned_v = engine.models.ranker.predict(pid, state, rows, at, page)
            at_rows = idx[sub]
            for label in IMPRESSION_LABELS:
                head = LABEL_INDEX.get(label)
                out["fyp_first_ranker_online"][label][at_rows] = (
                    first.values if head is None else first.probabilities[:, head]
                )
                out["fyp_mmoe_online"][label][at_rows] = (
                    learned_v if head is None else learned_p[:, head]
                )
                out["fyp_first_ranker_online_own_state_frozen"][label][at_rows] = (
                    held.values if head is None else held.probabilities[:, head]
                )
                out["fyp_first_ranker_online_session_state"][label][at_rows] = (
                    by_session.values if head is None else by_session.probabilities[:, head]
                )
        # 2. then learn from what happened
        replay_rows(engine, frame[np.sort(idx).tolist()].sort("time_ms", maintain_order=True))
        if progress is not None:
            progress(w + 1, len(bounds) - 1)
    return out
