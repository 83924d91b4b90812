-- Groundwork schema, PostgreSQL flavour. The SQLite flavour (../sqlite/) has the same tables,
-- columns and constraints with the closest SQLite types.

CREATE TABLE users (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE agents (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    description TEXT,
    config      JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'archived')),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX agents_type_idx ON agents (type);

CREATE TABLE tools (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    description TEXT,
    config      JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    is_active   BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE agent_tools (
    agent_id        BIGINT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    tool_id         BIGINT NOT NULL REFERENCES tools (id) ON DELETE CASCADE,
    config_override JSONB CHECK (config_override IS NULL OR jsonb_typeof(config_override) = 'object'),
    is_active       BOOLEAN NOT NULL DEFAULT TRUE,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, tool_id)
);
CREATE INDEX agent_tools_tool_idx ON agent_tools (tool_id);

CREATE TABLE prompts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    content     TEXT NOT NULL,
    agent_type  TEXT NOT NULL,
    metadata    JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    is_active   BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (name, version)
);
CREATE INDEX prompts_agent_type_idx ON prompts (agent_type, updated_at DESC);

CREATE TABLE workflows (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT,
    steps       JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(steps) = 'array'),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- Executions are history: deleting a workflow that has executions is refused (RESTRICT).
CREATE TABLE executions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workflow_id BIGINT NOT NULL REFERENCES workflows (id) ON DELETE RESTRICT,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'completed', 'failed', 'retrying')),
    input       JSONB NOT NULL DEFAULT '{}',
    output      JSONB,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    started_at  TIMESTAMPTZ,
    finished_at TIMESTAMPTZ
);
CREATE INDEX executions_workflow_idx ON executions (workflow_id, created_at DESC);
CREATE INDEX executions_status_idx ON executions (status);

CREATE TABLE checkpoints (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id BIGINT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step         TEXT NOT NULL,
    state        JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (execution_id, step)
);

CREATE TABLE sessions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id    BIGINT REFERENCES agents (id) ON DELETE SET NULL,
    metadata    JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT,
    details     JSONB NOT NULL DEFAULT '{}',
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, at DESC);
CREATE INDEX audit_log_action_idx ON audit_log (action, at DESC);

CREATE TABLE email_digests (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    period      TEXT NOT NULL,
    metadata    JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX email_digests_user_idx ON email_digests (user_id, created_at DESC, id DESC);

-- Change tracking for the tables the refreshing cache follows (agents, tools, agent_tools,
-- prompts). Every write to those tables appends here in the same transaction, under a
-- transaction-scoped advisory lock (PostgreSQL) or SQLite's single writer, so `seq` order is commit order and a reader that has seen
-- seq N has seen every change below N.
CREATE TABLE change_log (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity      TEXT NOT NULL CHECK (entity IN ('agent', 'tool', 'agent_tool', 'prompt')),
    entity_id   BIGINT NOT NULL,
    related_id  BIGINT,
    op          TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    changed_at  TIMESTAMPTZ NOT NULL
);
