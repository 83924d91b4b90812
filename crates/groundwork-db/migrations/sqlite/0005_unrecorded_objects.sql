-- File storage (issue 7): objects in the file store that may have no row in files, so that
-- a crash at any point leaves nothing unreferenced behind. An upload reserves its storage
-- key here before its first byte ('upload'); recording the file removes the reservation in
-- the same transaction. Deleting a file records its key here ('delete', claimed at once) in
-- the transaction that deletes the row, and the key leaves once the object is gone. A sweep
-- claims the reservations of uploads abandoned for long, removes their objects, then the
-- rows; a claimed reservation can no longer be turned into a file.
CREATE TABLE unrecorded_objects (
    storage_key TEXT PRIMARY KEY,
    reason      TEXT NOT NULL CHECK (reason IN ('upload', 'delete')),
    claimed     BOOLEAN NOT NULL DEFAULT FALSE CHECK (claimed IN (FALSE, TRUE)),
    created_at  TEXT NOT NULL
);
CREATE INDEX unrecorded_objects_created_idx ON unrecorded_objects (created_at);
