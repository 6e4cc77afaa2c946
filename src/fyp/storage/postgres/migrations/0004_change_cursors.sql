-- Change cursors (fyp.engine.Engine.reconcile_changes): every row of the tables a
-- serving process reconciles with carries the id of the transaction that last wrote it,
-- set by a trigger, so a write made by any client (not only through fyp) is seen. A
-- process reads the rows written since the oldest transaction still running at its
-- last read (pg_snapshot_xmin): ids are taken in one order and committed in another,
-- so a cursor of "the highest id read" would skip a transaction that committed later
-- with a lower id.

CREATE FUNCTION fyp_mark_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.changed_xid := pg_current_xact_id();
    RETURN NEW;
END
$$;

ALTER TABLE videos ADD COLUMN changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX videos_changed ON videos (changed_xid);
CREATE TRIGGER videos_changed BEFORE INSERT OR UPDATE ON videos
    FOR EACH ROW EXECUTE FUNCTION fyp_mark_changed();

ALTER TABLE moderation_actions ADD COLUMN changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX moderation_changed ON moderation_actions (changed_xid);
CREATE TRIGGER moderation_changed BEFORE INSERT OR UPDATE ON moderation_actions
    FOR EACH ROW EXECUTE FUNCTION fyp_mark_changed();

ALTER TABLE profiles ADD COLUMN changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX profiles_changed ON profiles (changed_xid);
CREATE TRIGGER profiles_changed BEFORE INSERT OR UPDATE ON profiles
    FOR EACH ROW EXECUTE FUNCTION fyp_mark_changed();

ALTER TABLE controls ADD COLUMN changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX controls_changed ON controls (changed_xid);
CREATE TRIGGER controls_changed BEFORE INSERT OR UPDATE ON controls
    FOR EACH ROW EXECUTE FUNCTION fyp_mark_changed();

ALTER TABLE refreshes ADD COLUMN changed_xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX refreshes_changed ON refreshes (changed_xid);
CREATE TRIGGER refreshes_changed BEFORE INSERT OR UPDATE ON refreshes
    FOR EACH ROW EXECUTE FUNCTION fyp_mark_changed();
