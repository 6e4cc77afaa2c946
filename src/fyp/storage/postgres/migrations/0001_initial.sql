-- The catalog, moderation, users and impressions stores (fyp.storage.postgres).
-- seq columns keep the order rows were first written (SQLite's rowid): the engine loads
-- the catalog and the profiles in that order.

CREATE TABLE videos (
    seq         BIGSERIAL NOT NULL,
    video_id    TEXT PRIMARY KEY,
    creator_id  TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    sound_id    TEXT,
    hashtags    JSONB NOT NULL,
    caption     TEXT NOT NULL,
    language    TEXT,
    regions     JSONB NOT NULL,
    created_at  BIGINT,
    labels      JSONB NOT NULL,
    attributes  JSONB NOT NULL
);
CREATE INDEX videos_seq ON videos (seq);

CREATE TABLE moderation_actions (
    id       BIGSERIAL PRIMARY KEY,
    video_id TEXT NOT NULL,
    state    TEXT,
    labels   JSONB,
    reason   TEXT NOT NULL,
    actor    TEXT NOT NULL,
    ts       BIGINT NOT NULL
);
CREATE INDEX moderation_video ON moderation_actions (video_id);

CREATE TABLE profiles (
    seq        BIGSERIAL NOT NULL,
    user_id    TEXT PRIMARY KEY,
    age_band   TEXT,
    language   TEXT,
    region     TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    attributes JSONB NOT NULL
);
CREATE TABLE controls (
    user_id    TEXT PRIMARY KEY,
    settings   JSONB NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE refreshes (
    id         BIGSERIAL PRIMARY KEY,
    user_id    TEXT NOT NULL,
    log_offset BIGINT NOT NULL,
    ts         BIGINT NOT NULL
);
CREATE INDEX refreshes_user ON refreshes (user_id);
CREATE TABLE erasures (
    user_id   TEXT PRIMARY KEY,
    audit_ref TEXT NOT NULL,
    ts        BIGINT NOT NULL
);

CREATE TABLE impressions (
    id         BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    video_id   TEXT NOT NULL,
    position   INTEGER NOT NULL,
    source     TEXT NOT NULL,
    score      DOUBLE PRECISION NOT NULL,
    surface    TEXT NOT NULL,
    ts         BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    signals    JSONB NOT NULL,
    UNIQUE (request_id, position)
);
CREATE INDEX impressions_user_video ON impressions (user_id, video_id);
CREATE INDEX impressions_user_id ON impressions (user_id, id);
CREATE INDEX impressions_ts ON impressions (ts);
CREATE TABLE filter_counts (
    day     BIGINT NOT NULL,
    surface TEXT NOT NULL,
    filter  TEXT NOT NULL,
    rule    TEXT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (day, surface, filter, rule)
);
