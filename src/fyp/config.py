"""Settings: read once at the edge, from the environment, then a TOML file, then defaults.

Precedence: ``FYP_*`` environment variables > ``--config`` / ``FYP_CONFIG`` TOML file >
the defaults below. Nested sections are set in the file (``[feedback]``, ``[ranker]``,
...); the environment sets the top-level scalars (``FYP_DATA_DIR``, ``FYP_REGION``,
``FYP_HOST``, ``FYP_PORT``, ``FYP_EVENT_LOG``) and a few of a section's
(``FYP_MODEL_CHANNEL``: ``[model] channel``; ``FYP_RATE_LIMITS``: ``[auth]
rate_limits``; ``FYP_SECRET_FILE``: ``[privacy] secret_file``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fyp.safety.policy import PolicyConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedbackConfig(_Section):
    """What a view means. A view is a *long view* (a positive) when it lasted at least
    ``long_view_min_ms`` or covered at least ``long_view_min_ratio`` of the video; it is
    a *skip* when it lasted less than ``skip_max_ms``; it is a *finish* when it covered
    at least ``finish_min_ratio``. The defaults reproduce KuaiRand's own ``long_view``
    flag on 99.8% of its long views (18 s or nearly the whole video)."""

    long_view_min_ms: int = Field(18_000, ge=0)
    long_view_min_ratio: float = Field(0.95, gt=0)
    finish_min_ratio: float = Field(0.95, gt=0)
    skip_max_ms: int = Field(2_000, ge=0)


class LimitsConfig(_Section):
    """Input limits enforced at the API edge."""

    max_batch_events: int = Field(5_000, ge=1)
    max_batch_videos: int = Field(5_000, ge=1)
    max_body_bytes: int = Field(5 * 1024 * 1024, ge=1024)
    max_future_ms: int = Field(24 * 3600 * 1000, ge=0)
    max_watch_ratio: float = Field(10.0, gt=0)


class SourcesConfig(_Section):
    """Candidate sources: how many each may contribute, and their time budget."""

    budget_ms: float = Field(25.0, gt=0)  # per source; one that returns later is counted as late
    trending_half_life_hours: float = Field(24.0, gt=0)
    trending_candidates: int = Field(60, ge=0)
    fresh_window_hours: float = Field(72.0, gt=0)
    fresh_exposure_budget: int = Field(200, ge=0)  # impressions each new video is promised
    fresh_candidates: int = Field(20, ge=0)
    coengagement_seeds: int = Field(20, ge=0)  # the user's most recent positives
    coengagement_neighbours: int = Field(50, ge=0)  # kept per video
    coengagement_candidates: int = Field(60, ge=0)
    followed_candidates: int = Field(30, ge=0)
    topic_seeds: int = Field(5, ge=0)  # the user's best-liked hashtags the topics source reads
    topic_candidates: int = Field(40, ge=0)
    # a newcomer's cards across topics, to find their taste (fyp.retrieve.discover)
    discover_candidates: int = Field(10, ge=0)
    # unseen videos of a person's two or more session tastes, in all (fyp.retrieve.tastes)
    taste_candidates: int = Field(30, ge=0)
    backfill_candidates: int = Field(50, ge=0)


class RankerConfig(_Section):
    """The first ranker: per-label online logistic regressions; value = Σ weight × P."""

    # A long view is the engine's positive (the label the rankers are judged on): at
    # weight 1 the value score ranked long views below either ranker's own long-view
    # head, its other terms outweighing it between pages (skip, like). 4 was chosen on
    # the two validation days before the test day (docs/evaluation.md).
    value_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "long_view": 4.0,
            "finish": 0.5,
            "like": 2.0,
            "share": 3.0,
            "follow": 4.0,
            "comment": 2.0,
            "skip": -1.0,
            "not_interested": -5.0,
        }
    )

    @field_validator("value_weights")
    @classmethod
    def _known_labels(cls, weights: dict[str, float]) -> dict[str, float]:
        # Imported here: fyp.state.feedback reads this module's FeedbackConfig.
        from fyp.state.feedback import LABELS

        unknown = sorted(set(weights) - set(LABELS))
        if unknown:
            raise ValueError(f"unknown labels {unknown}; the ranker predicts {list(LABELS)}")
        return weights

    prior_strength: float = Field(20.0, gt=0)  # pseudo-views behind each smoothed rate
    # A view's example waits this long for the user's like, share, follow... on it.
    label_window_s: float = Field(600.0, gt=0)
    # An action on the video of a user's last closed example, up to this long after it
    # opened, corrects that example (a like sent minutes later still counts as a label).
    late_window_s: float = Field(86_400.0, ge=0)
    late_examples_kept: int = Field(100_000, ge=0)  # users whose last example is kept
    micro_batch: int = Field(64, ge=1)  # examples per learning step
    learning_rate: float = Field(0.05, gt=0)
    affinity_half_life_days: float = Field(14.0, gt=0)


class FeedConfig(_Section):
    max_count: int = Field(50, ge=1)
    default_count: int = Field(10, ge=1)
    served_memory: int = Field(2_000, ge=0)  # recently served ids remembered per user
    history_size: int = Field(200, ge=1)  # recent views kept per user
    not_interested_days: float = Field(30.0, ge=0)  # creator / sound suppression
    fresh_share: float = Field(0.2, ge=0, le=1)  # of each page, for new uploads' first audience
    max_per_creator: int = Field(2, ge=1)  # per page, while other candidates remain
    # Of a page and the cards just before it (a default page's length in all), from one
    # topic (hashtags grouped by use), while other candidates remain: the floor of a
    # session's variety however fast it leans (0: no cap). fyp.rerank.diversity
    max_per_topic: int = Field(8, ge=0)
    # Videos carrying any of these labels are never served on any surface.
    excluded_labels: tuple[str, ...] = ("removed", "ineligible", "misinformation")


class ModelSettings(_Section):
    """The learned models (``fyp.model``): a multi-task ranker (MMoE) that takes over from
    the first ranker once it has seen ``warmup_examples``, and two-tower retrieval that
    joins the candidate sources after ``retrieval_warmup`` positives.

    Off by default for now: they rank better (see docs/evaluation.md) but roughly double
    the CPU a feed request costs, which today takes the HTTP p99 past its 30 ms target."""

    enabled: bool = False
    ranker_batch: int = Field(256, ge=1)  # examples per optimisation step
    retrieval_batch: int = Field(256, ge=2)
    warmup_examples: int = Field(20_000, ge=0)
    retrieval_warmup: int = Field(5_000, ge=0)
    embedding_dim: int = Field(16, ge=1)
    min_count: int = Field(2, ge=1)  # occurrences before an id gets its own row
    expire_after_days: float = Field(30.0, gt=0)
    retrieval_candidates: int = Field(100, ge=0)
    rerank_top: int = Field(64, ge=1)  # candidates the learned ranker re-orders per request
    seed: int = 0
    threads: int = Field(1, ge=1)  # BLAS, torch, faiss threads (fyp.model.threads)
    # The server's learning loop reads no new events while either model has this many
    # batches queued: under a stream faster than training, the lag then waits in the
    # durable log instead of as examples in memory (which would grow without bound).
    max_queued_batches: int = Field(64, ge=1)
    # Where the models train when the server runs them: "process", a learner process of
    # its own that ``fyp serve`` starts and supervises (fyp.learning), whose published
    # models the server reads as a replica; "in_process", the server's own learning loop.
    learner: Literal["process", "in_process"] = "process"
    publish_interval_s: float = Field(0.25, gt=0)  # the learner publishes deltas this often
    poll_interval_s: float = Field(0.1, gt=0)  # the server looks for them this often
    snapshot_every_s: float = Field(60.0, gt=0)  # a whole snapshot (new servers start from it)
    # The learner's scheduling priority (fyp.learning.priority): "nice", nice
    # ``learner_nice`` (serving wins the CPU, the learner still gets a share of a busy
    # machine); "idle", SCHED_IDLE where the system permits it (CPU no other process
    # wants, else nice ``learner_nice``): on cores that serving keeps busy the learner
    # then gets none, and an erasure waiting for it times out.
    learner_priority: Literal["idle", "nice"] = "nice"
    learner_nice: int = Field(19, ge=0, le=19)
    # How long an erasure waits for the running learner to drop the user (then it fails,
    # and asking again completes it).
    learner_erase_timeout_s: float = Field(60.0, gt=0)
    # Where the learner publishes and serving reads (fyp.model.channel): None, files in
    # the data dir (one machine); redis://host:port/db?prefix=p, a Redis server that
    # serving processes on other machines read too (docs/cluster.md).
    channel: str | None = None

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, url: str | None) -> str | None:
        from fyp.model.channel import check_channel_url

        return None if url is None else check_channel_url(url)


class ScorerConfig(_Section):
    """The page scorer (``fyp.rank.page_scorer``): orders the candidate pool by whether
    the person engages with each video next, a weighted sum of popularity on the surface
    and in the region, the two-tower cosine and the ranker's value, the weights
    chosen on the engine's own log.

    Every ``retrain_hours`` of event time it takes the candidate pools of up to
    ``snapshot_users`` recently active users with their features, and at the next one
    labels them with what those users went on to engage with and chooses the weights on
    the last ``keep_periods`` such periods. Until trained (a new deployment, too few
    labelled pools), the ranker's order serves."""

    enabled: bool = False
    retrain_hours: float = Field(24.0, gt=0)
    # Boundaries fall this many hours after each multiple of ``retrain_hours`` since the
    # Unix epoch (UTC): 0 with 24 is at midnight UTC; a deployment picks its quiet hour.
    offset_hours: float = Field(0.0, ge=0)
    pool_count: int = Field(50, ge=1)  # the page size a pool is taken for (top-ups: 3×)
    # Each pool is a pipeline request with its features: the boundary's main cost. A few
    # weights need hundreds of labelled pools, not thousands (docs/evaluation.md).
    snapshot_users: int = Field(1_000, ge=1)
    keep_periods: int = Field(3, ge=1)
    min_groups: int = Field(100, ge=1)  # labelled pools (with a positive) to train on
    negatives_per_group: int = Field(150, ge=1)  # sampled from each pool's non-positives
    seed: int = 0


class PrivacyConfig(_Section):
    """Residency, pseudonymous ids at rest, retention and the fraud guard (fyp.privacy)."""

    # The keyed hash's secret, outside the data directory; None: ``<data_dir>.secret``
    # beside it. Made at the first start; the data is unusable without it.
    secret_file: Path | None = None
    # Events, feeds and controls only for users created here (PUT /v1/users/{id}) with
    # this deployment's region. False for trusted offline work (an import, an
    # evaluation) where every user in the data is this deployment's.
    require_registered_users: bool = True
    retention_days: float = Field(365.0, ge=0)  # events and impressions; 0: kept forever
    # Likes, shares, follows and comments past this many in any minute of one user's
    # event time are not trained on (engagement fraud).
    max_actions_per_minute: int = Field(30, ge=1)


class AuthConfig(_Section):
    """API keys (``fyp keys create``) and rate limits: per key, per user, per client
    address for failed authentication, and per key for users created.

    A key's rate is set below what one server process serves, so that one key (a leaked
    one, a runaway client) cannot take the whole server from the others; a deployment
    whose one backend key carries all its traffic raises it (docs/privacy.md). Load
    generators (benchmarks, simulations, the demo) set their own, higher limits."""

    required: bool = True  # False: no keys asked (a closed network, a test)
    key_rate_per_s: float = Field(100.0, gt=0)  # requests per second per key
    key_burst: float = Field(200.0, ge=1)
    user_rate_per_s: float = Field(20.0, gt=0)  # feed requests and events per user
    user_burst: float = Field(200.0, ge=1)
    # User tokens (POST /v1/tokens): how long one lasts unless the issuer asks for less
    # or more, and the most it may ask for. Short, because a token is carried by a client
    # (a URL, a phone) and cannot be revoked one by one: a leaked one is soon useless.
    token_ttl_s: int = Field(900, ge=1)
    token_max_ttl_s: int = Field(86_400, ge=1)
    # How long from its issue a token may be renewed (POST /v1/tokens/renew) by the client
    # holding it: the longest a session goes without the issuer. 0: never renewed.
    token_session_s: int = Field(43_200, ge=0)
    # Requests with a missing or invalid key, per client address: past the burst, such a
    # request gets 429, its key id answered from memory (SQLite not asked); a valid key
    # from the same address (a proxy's, a NAT's) is still served.
    failed_auth_rate_per_s: float = Field(1.0, gt=0)
    failed_auth_burst: float = Field(20.0, ge=1)
    # Users one key may create (PUT /v1/users/{id} of a new id): this many at once, then
    # this many per window. Each user costs memory for as long as it exists; updates of
    # existing users are not counted.
    user_creations_per_key: int = Field(1_000, ge=1)
    user_creation_window_s: float = Field(3_600.0, gt=0)
    # /metrics without a key. False: any valid key (whatever its scopes) is needed, even
    # on a loopback bind, since a reverse proxy on the same host makes loopback public.
    metrics_public: bool = False
    # Where the rate limits' buckets are (fyp.privacy.ratelimit.limiters): None, on
    # the event log's Redis server when the log is on one (every API process sharing
    # the log shares the limits), else in this process; "memory", in this process
    # always (each process lets a key through at the full rate); a redis:// URL, that
    # server (docs/cluster.md).
    rate_limits: str | None = None

    @field_validator("rate_limits")
    @classmethod
    def _known_store(cls, url: str | None) -> str | None:
        if url is None or url == "memory":
            return url
        from fyp.storage.redis_server import split_url

        split_url(url, "the rate limits'")
        return url


# The [auth] limits of a program that drives its own server at a machine's pace (the
# demo, the simulations, the benchmarks, tests): the load is the point there, so the per
# key, per user and user-creation limits are lifted (failed authentication is not).
LOAD_GENERATOR_AUTH: dict[str, float] = {
    "key_rate_per_s": 1e9,
    "key_burst": 1e9,
    "user_rate_per_s": 1e9,
    "user_burst": 1e9,
    "user_creations_per_key": 1_000_000_000,
}


class Settings(_Section):
    data_dir: Path = Path(".fyp-data")
    region: str = "local"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    feedback: FeedbackConfig = FeedbackConfig()
    limits: LimitsConfig = LimitsConfig()
    sources: SourcesConfig = SourcesConfig()
    ranker: RankerConfig = RankerConfig()
    feed: FeedConfig = FeedConfig()
    model: ModelSettings = ModelSettings()
    scorer: ScorerConfig = ScorerConfig()
    policy: PolicyConfig = PolicyConfig()  # eligibility, age, reports, strikes (fyp.safety)
    privacy: PrivacyConfig = PrivacyConfig()
    auth: AuthConfig = AuthConfig()
    # Where the event log is (fyp.events.backends): None, the embedded SQLite file in the
    # data dir; or a URL, such as redis://127.0.0.1:6379/0, shared by several processes.
    event_log: str | None = None
    # Where the catalog, moderation, users and impressions are (fyp.storage.backends):
    # None, the embedded SQLite files in the data dir; or a URL, such as
    # postgresql://fyp@127.0.0.1:5432/fyp, shared by several processes.
    store: str | None = None
    # The server writes a checkpoint of the learning state every this many events (and
    # at a clean shutdown): a restart loads it and replays only the rest. 0: never.
    checkpoint_every_events: int = Field(100_000, ge=0)
    # A background checkpoint's child still writing after this long is killed (and its
    # partial file removed): a child that hung (a lock held at the fork) would otherwise
    # keep every later checkpoint, and an erasure waiting for it, waiting forever.
    checkpoint_timeout_s: float = Field(600.0, gt=0)

    @field_validator("event_log")
    @classmethod
    def _known_backend(cls, url: str | None) -> str | None:
        from fyp.events.backends import check_event_log_url

        return None if url is None else check_event_log_url(url)

    @field_validator("store")
    @classmethod
    def _known_store(cls, url: str | None) -> str | None:
        from fyp.storage.backends import check_store_url

        return None if url is None else check_store_url(url)


_ENV_KEYS = {
    "data_dir": "FYP_DATA_DIR",
    "region": "FYP_REGION",
    "host": "FYP_HOST",
    "port": "FYP_PORT",
    "event_log": "FYP_EVENT_LOG",
    "store": "FYP_STORE",
}
# Settings of a section that the environment sets too: (section, name) -> variable.
_SECTION_ENV_KEYS = {
    ("model", "channel"): "FYP_MODEL_CHANNEL",
    ("auth", "rate_limits"): "FYP_RATE_LIMITS",
    ("privacy", "secret_file"): "FYP_SECRET_FILE",
}


def load_settings(
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings: explicit overrides (CLI flags) > environment > file > defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (Path(env["FYP_CONFIG"]) if env.get("FYP_CONFIG") else None)
    if path is not None:
        with path.open("rb") as f:
            values.update(tomllib.load(f))
    for key, var in _ENV_KEYS.items():
        if var in env:
            values[key] = env[var]
    for (section, key), var in _SECTION_ENV_KEYS.items():
        if var in env:
            values[section] = {**values.get(section, {}), key: env[var]}
    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping):  # a section's settings: merged into the file's
            value = {k: v for k, v in value.items() if v is not None}
            if value:
                values[key] = {**values.get(key, {}), **value}
        elif value is not None:
            values[key] = value
    return Settings.model_validate(values)
