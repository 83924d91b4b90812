-- Messaging (issue 6): executions accepted by the API wait as 'queued' until a worker starts
-- them (the earlier 'pending'); the embedded job queue; the transactional outbox; the inbox
-- that makes consumers idempotent.

ALTER TABLE executions DROP CONSTRAINT executions_status_check;
UPDATE executions SET status = 'queued' WHERE status = 'pending';
ALTER TABLE executions ALTER COLUMN status SET DEFAULT 'queued';
ALTER TABLE executions ADD CONSTRAINT executions_status_check
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'retrying'));

-- One row per message of the database-backed queue. A message is claimed by moving
-- visible_at past now (the lease) and setting lease to the claimer's token; ack deletes it;
-- retry moves visible_at to the next attempt; a dead message stays with dead = TRUE.
CREATE TABLE queue_jobs (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue      TEXT NOT NULL,
    message_id TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    dead       BOOLEAN NOT NULL DEFAULT FALSE,
    visible_at TIMESTAMPTZ NOT NULL,
    lease      BIGINT,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (queue, message_id)
);
CREATE INDEX queue_jobs_claim_idx ON queue_jobs (queue, visible_at, id) WHERE dead = FALSE;

-- Messages written in the same transaction as the business change that caused them; the
-- relay publishes them and deletes the row.
CREATE TABLE outbox (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue      TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    payload    BYTEA NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    visible_at TIMESTAMPTZ NOT NULL,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX outbox_visible_idx ON outbox (visible_at, id);

-- Message ids a consumer has processed, written in the same transaction as the effect.
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_processed_idx ON inbox (processed_at);
