-- Completed erasures, counted (fyp.storage.changes): an erasure deletes its user's rows,
-- which a read of the rows changed since a cursor cannot return, so a process that
-- missed its notices would see it only at its next whole read. The erasure bumps this
-- one row in its own transaction, stamped like the others, so the next incremental read
-- learns that one completed. Whose is not recorded: an erasure leaves nothing that
-- names its user.

CREATE TABLE erasures_completed (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    n    BIGINT NOT NULL,
    changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
INSERT INTO erasures_completed (id, n) VALUES (0, 0);
CREATE TRIGGER erasures_completed_changed BEFORE INSERT OR UPDATE ON erasures_completed
    FOR EACH ROW EXECUTE FUNCTION fyp_mark_changed();
