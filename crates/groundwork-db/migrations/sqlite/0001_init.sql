-- Groundwork schema, SQLite flavour. Same tables, columns and constraints as ../postgres/:
-- INTEGER PRIMARY KEY AUTOINCREMENT for identities (ids are never reused), TEXT holding JSON
-- checked with json_valid/json_type, INTEGER 0/1 for booleans, and RFC 3339 UTC TEXT for
-- timestamps (always written by Groundwork in one format, so text order is time order).

CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    email       TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE agents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    description TEXT,
    config      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config) AND json_type(config) = 'object'),
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'archived')),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX agents_type_idx ON agents (type);

CREATE TABLE tools (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    description TEXT,
    config      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config) AND json_type(config) = 'object'),
    is_active   INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE agent_tools (
    agent_id        INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tool_id         INTEGER NOT NULL REFERENCES tools (id) ON DELETE CASCADE,
    config_override TEXT CHECK (config_override IS NULL OR (json_valid(config_override) AND json_type(config_override) = 'object')),
    is_active       INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (agent_id, tool_id)
);
CREATE INDEX agent_tools_tool_idx ON agent_tools (tool_id);

CREATE TABLE prompts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    content     TEXT NOT NULL,
    agent_type  TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    is_active   INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX prompts_agent_type_idx ON prompts (agent_type, updated_at DESC);

CREATE TABLE workflows (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    steps       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(steps) AND json_type(steps) = 'array'),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Executions are history: deleting a workflow that has executions is refused (RESTRICT).
CREATE TABLE executions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id INTEGER NOT NULL REFERENCES workflows (id) ON DELETE RESTRICT,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'completed', 'failed', 'retrying')),
    input       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(input)),
    output      TEXT CHECK (output IS NULL OR json_valid(output)),
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    started_at  TEXT,
    finished_at TEXT
);
CREATE INDEX executions_workflow_idx ON executions (workflow_id, created_at DESC);
CREATE INDEX executions_status_idx ON executions (status);

CREATE TABLE checkpoints (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id INTEGER NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step         TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (json_valid(state)),
    created_at   TEXT NOT NULL,
    UNIQUE (execution_id, step)
);

CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id    INTEGER REFERENCES agents (id) ON DELETE SET NULL,
    metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT,
    details     TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details)),
    at          TEXT NOT NULL
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at DESC);
CREATE INDEX audit_log_action_idx ON audit_log (action, at DESC);

CREATE TABLE email_digests (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    period      TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    created_at  TEXT NOT NULL
);
CREATE INDEX email_digests_user_idx ON email_digests (user_id, created_at DESC, id DESC);

-- Change tracking for the tables the refreshing cache follows (agents, tools, agent_tools,
-- prompts). Every write to those tables appends here in the same transaction, under a
-- transaction-scoped advisory lock (PostgreSQL) or SQLite's single writer, so `seq` order is commit order and a reader that has seen
-- seq N has seen every change below N.
CREATE TABLE change_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    entity      TEXT NOT NULL CHECK (entity IN ('agent', 'tool', 'agent_tool', 'prompt')),
    entity_id   INTEGER NOT NULL,
    related_id  INTEGER,
    op          TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    changed_at  TEXT NOT NULL
);
