-- The handles the notices of users' changes carry instead of pseudonyms
-- (fyp.cluster.changes): random, deleted with the user at erasure.

CREATE TABLE user_handles (
    user_id TEXT PRIMARY KEY,
    handle  TEXT NOT NULL UNIQUE
);
