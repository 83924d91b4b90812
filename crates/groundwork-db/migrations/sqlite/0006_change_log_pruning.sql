-- The change log is pruned of rows older than a retention (a week by default, see the
-- server), so that it does not grow for ever. A reader whose cursor lies below what was
-- pruned has missed changes and must reload everything: one row records the highest `seq`
-- pruned so far.
CREATE TABLE change_log_pruned (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq INTEGER NOT NULL CHECK (through_seq >= 0)
);
INSERT INTO change_log_pruned (id, through_seq) VALUES (1, 0);
CREATE INDEX change_log_changed_idx ON change_log (changed_at);
