-- File storage (issue 7): one row per stored object, written only once the object is
-- complete. A file may be attached to an execution or an e-mail digest.
CREATE TABLE files (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    storage_key  TEXT NOT NULL UNIQUE,
    owner        TEXT NOT NULL,
    execution_id INTEGER REFERENCES executions (id) ON DELETE SET NULL,
    digest_id    INTEGER REFERENCES email_digests (id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX files_created_idx ON files (created_at DESC, id DESC);
CREATE INDEX files_execution_idx ON files (execution_id) WHERE execution_id IS NOT NULL;
CREATE INDEX files_digest_idx ON files (digest_id) WHERE digest_id IS NOT NULL;
