-- no-transaction
-- Messaging (issue 6): executions accepted by the API wait as 'queued' until a worker starts
-- them (the earlier 'pending'); the embedded job queue; the transactional outbox; the inbox
-- that makes consumers idempotent.
--
-- SQLite cannot alter a CHECK constraint: executions is rebuilt with SQLite's documented
-- procedure (foreign keys off so that dropping the old table cascades nothing, one
-- transaction, foreign_key_check before commit), hence no-transaction for this file.

PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE executions_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id INTEGER NOT NULL REFERENCES workflows (id) ON DELETE RESTRICT,
    status      TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'completed', 'failed', 'retrying')),
    input       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(input)),
    output      TEXT CHECK (output IS NULL OR json_valid(output)),
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT
);
INSERT INTO executions_new (id, workflow_id, status, input, output, error, attempts,
                            created_at, updated_at, started_at, finished_at)
    SELECT id, workflow_id, CASE status WHEN 'pending' THEN 'queued' ELSE status END, input,
           output, error, attempts, created_at, updated_at, started_at, finished_at
    FROM executions;
DROP TABLE executions;
ALTER TABLE executions_new RENAME TO executions;
CREATE INDEX executions_workflow_idx ON executions (workflow_id, created_at DESC);
CREATE INDEX executions_status_idx ON executions (status);

CREATE TABLE queue_jobs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue      TEXT NOT NULL,
    message_id TEXT NOT NULL,
    payload    BLOB NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    dead       BOOLEAN NOT NULL DEFAULT FALSE CHECK (dead IN (FALSE, TRUE)),
    visible_at TEXT NOT NULL,
    lease      INTEGER,
    last_error TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (queue, message_id)
);
CREATE INDEX queue_jobs_claim_idx ON queue_jobs (queue, visible_at, id) WHERE dead = FALSE;

CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue      TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    payload    BLOB NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    visible_at TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX outbox_visible_idx ON outbox (visible_at, id);

CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    processed_at TEXT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_processed_idx ON inbox (processed_at);

PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
