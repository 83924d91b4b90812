//! Groundwork's data layer: one [`Database`] handle over SQLite (embedded default) or
//! PostgreSQL, chosen by URL, with migrations, models, repositories and change tracking.
//!
//! - Same behaviour on both engines: every repository runs the same SQL text on either pool,
//!   and one conformance suite (`tests/conformance.rs`) runs against both.
//! - Every write to agents, tools, agent_tools and prompts appends to a change log in the
//!   same transaction ([`Database::changes`]), so a reader can ask "what changed since
//!   cursor C" and refresh in proportion to what changed.
//! - Every write records who did it in the audit log, in the same transaction.
//! - Errors are a typed [`DbError`] classified by database error kind, never by message text.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use groundwork_db::{Database, DatabaseOptions, NewAgent, NewTool, Page, AgentFilter};
//! use serde_json::json;
//!
//! let db = Database::connect(DatabaseOptions::new("sqlite::memory:")).await?;
//! db.migrate().await?;
//!
//! let agent = db.agents().create("docs", &NewAgent {
//!     name: "triage".into(),
//!     kind: "classifier".into(),
//!     description: None,
//!     config: json!({ "model": "gpt-4o-mini" }),
//!     status: Default::default(),
//! }).await?;
//! let tool = db.tools().create("docs", &NewTool {
//!     name: "search".into(),
//!     kind: "http".into(),
//!     description: None,
//!     config: json!({ "url": "https://example.com" }),
//!     is_active: true,
//! }).await?;
//! db.tools().attach("docs", agent.id, tool.id, &Default::default()).await?;
//!
//! let tools = db.tools().active_for_agent(agent.id).await?;
//! assert_eq!(tools[0].name, "search");
//!
//! let changes = db.changes().since(0, 100).await?;
//! assert_eq!(changes.changes.len(), 3); // agent, tool, attachment
//!
//! let agents = db.agents().list(&AgentFilter::default(), Page::default()).await?;
//! assert_eq!(agents.total, 1);
//! # Ok::<(), groundwork_db::DbError>(())
//! # }).unwrap();
//! ```

mod database;
mod error;
mod page;
pub mod supervisor;
mod validate;

pub mod agents;
pub mod audit;
pub mod changes;
pub mod files;
pub mod prompts;
pub mod queue;
pub mod sessions;
pub mod tools;
pub mod users;
pub mod views;
pub mod workflows;

pub use agents::{Agent, AgentFilter, AgentPatch, AgentStatus, Agents, NewAgent};
pub use audit::{Audit, AuditEntry, AuditFilter, NewAuditEntry};
pub use changes::{
    CHANGE_CHANNEL, Change, ChangeBatch, ChangeEvent, ChangeListener, Changes, Entity, Op,
};
pub use database::{BackendKind, Database, DatabaseOptions, now};
pub use error::{DbError, Result};
pub use files::{File, FileFilter, Files, NewFile, UnrecordedObject, UnrecordedReason};
pub use page::{Listing, Page};
pub use prompts::{NewPrompt, Prompt, PromptFilter, PromptPatch, Prompts};
pub use queue::{
    ClaimedJob, DeadJob, Inbox, JOBS_CHANNEL, JobCounts, JobListener, Jobs, NewMessage, Outbox,
    OutboxRow,
};
pub use sessions::{NewSession, Session, Sessions};
pub use supervisor::{HealthCheck, PoolStats};
pub use tools::{AgentTool, AttachedTool, Attachment, NewTool, Tool, ToolFilter, ToolPatch, Tools};
pub use users::{Digests, EmailDigest, NewDigest, NewUser, User, UserFilter, UserPatch, Users};
pub use validate::limits;
pub use views::{AgentRuntime, Views};
pub use workflows::{
    Acquired, Checkpoint, Execution, ExecutionLease, ExecutionStatus, Executions, NewWorkflow,
    Workflow, WorkflowPatch, Workflows,
};

impl Database {
    /// Agents.
    #[must_use]
    pub fn agents(&self) -> Agents<'_> {
        Agents::new(self)
    }

    /// Tools and their attachments to agents.
    #[must_use]
    pub fn tools(&self) -> Tools<'_> {
        Tools::new(self)
    }

    /// Prompts.
    #[must_use]
    pub fn prompts(&self) -> Prompts<'_> {
        Prompts::new(self)
    }

    /// Users.
    #[must_use]
    pub fn users(&self) -> Users<'_> {
        Users::new(self)
    }

    /// E-mail digests stored for users.
    #[must_use]
    pub fn digests(&self) -> Digests<'_> {
        Digests::new(self)
    }

    /// Workflows.
    #[must_use]
    pub fn workflows(&self) -> Workflows<'_> {
        Workflows::new(self)
    }

    /// Workflow executions and their checkpoints.
    #[must_use]
    pub fn executions(&self) -> Executions<'_> {
        Executions::new(self)
    }

    /// User sessions.
    #[must_use]
    pub fn sessions(&self) -> Sessions<'_> {
        Sessions::new(self)
    }

    /// The audit log.
    #[must_use]
    pub fn audit(&self) -> Audit<'_> {
        Audit::new(self)
    }

    /// Batch read models (agent tools, agent runtimes, agents affected by changes).
    #[must_use]
    pub fn views(&self) -> Views<'_> {
        Views::new(self)
    }

    /// Metadata of stored files.
    #[must_use]
    pub fn files(&self) -> Files<'_> {
        Files::new(self)
    }

    /// The rows of the database-backed job queue.
    #[must_use]
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs::new(self)
    }

    /// The transactional outbox.
    #[must_use]
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox::new(self)
    }

    /// The consumers' record of processed message ids.
    #[must_use]
    pub fn inbox(&self) -> Inbox<'_> {
        Inbox::new(self)
    }

    /// The change log of agents, tools, agent_tools and prompts.
    #[must_use]
    pub fn changes(&self) -> Changes<'_> {
        Changes::new(self)
    }
}
