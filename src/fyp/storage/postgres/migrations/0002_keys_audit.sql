-- The API keys (fyp.storage.postgres.keys) and the audit log (fyp.storage.postgres.audit).

CREATE TABLE api_keys (
    seq         BIGSERIAL NOT NULL,
    key_id      TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    region      TEXT,
    label       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    token_epoch INTEGER NOT NULL DEFAULT 0
);
-- One row: bumped by every write of api_keys in its transaction, so that a process
-- reads the keys again only when another has changed them.
CREATE TABLE api_keys_version (
    one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    version BIGINT NOT NULL
);
INSERT INTO api_keys_version (version) VALUES (0);

-- One row a record: its line exactly as the file log writes it (hash over its
-- canonical JSON), so the chain verifies by the same code; the other columns are for
-- reading by seq, time or action.
CREATE TABLE audit_log (
    seq     BIGINT PRIMARY KEY,
    ts      BIGINT NOT NULL,
    action  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    outcome TEXT NOT NULL,
    subject TEXT,
    line    TEXT NOT NULL
);
-- One row: the last record's seq and hash (audit.head's twin), updated in the append's
-- transaction; appenders lock it, which orders them into one chain.
CREATE TABLE audit_head (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, repeat('0', 64));
