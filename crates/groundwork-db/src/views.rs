//! Read models assembled from several tables, loaded in batches: what an agent runs with
//! (its active tools; its runtime of agent, prompt and tools), and which agents a batch of
//! changes affects. These are the loaders behind the server's refreshing caches.
//!
//! Batches pass their ids as one JSON array parameter (`json_each` on SQLite,
//! `jsonb_array_elements_text` on PostgreSQL), so one statement serves any batch size.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use crate::agents::agent_columns;
use crate::changes::{Change, Entity};
use crate::database::on_pool;
use crate::error::Result;
use crate::prompts::prompt_columns;
use crate::tools::{AttachedRow, AttachedTool};
use crate::{Agent, BackendKind, Database, Prompt};

/// What an agent runs with: the agent, its active prompt (the newest active prompt for its
/// type) and its active tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentRuntime {
    /// The agent.
    pub agent: Agent,
    /// The newest active prompt whose `agent_type` is the agent's type, if any.
    pub prompt: Option<Prompt>,
    /// The agent's active tools, by name.
    pub tools: Vec<AttachedTool>,
}

/// Batch loaders. Reached through [`Database::views`].
#[derive(Debug, Clone, Copy)]
pub struct Views<'a> {
    db: &'a Database,
}

macro_rules! attached_select {
    () => {
        "SELECT x.agent_id, t.id, t.name, t.type, t.description, t.config, x.config_override, \
         x.created_at AS attached_at, t.updated_at AS tool_updated_at, \
         x.updated_at AS attachment_updated_at \
         FROM agent_tools x JOIN tools t ON t.id = x.tool_id \
         WHERE x.is_active = TRUE AND t.is_active = TRUE"
    };
}

#[derive(sqlx::FromRow)]
struct AgentAttachedRow {
    agent_id: i64,
    #[sqlx(flatten)]
    row: AttachedRow,
}

impl<'a> Views<'a> {
    pub(crate) fn new(db: &'a Database) -> Self {
        Self { db }
    }

    fn postgres(&self) -> bool {
        self.db.backend_kind() == BackendKind::Postgres
    }

    /// The active tools of each existing agent among `agent_ids` (agents without tools map
    /// to an empty list; unknown ids are absent).
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn tools_of(&self, agent_ids: &[i64]) -> Result<HashMap<i64, Vec<AttachedTool>>> {
        if agent_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids = Json(agent_ids);
        let (agents_sql, tools_sql) = if self.postgres() {
            (
                "SELECT id FROM agents WHERE id IN \
                 (SELECT value::bigint FROM jsonb_array_elements_text($1))",
                concat!(
                    attached_select!(),
                    " AND x.agent_id IN (SELECT value::bigint FROM jsonb_array_elements_text($1))"
                ),
            )
        } else {
            (
                "SELECT id FROM agents WHERE id IN (SELECT value FROM json_each($1))",
                concat!(
                    attached_select!(),
                    " AND x.agent_id IN (SELECT value FROM json_each($1))"
                ),
            )
        };
        let (agents, rows) = on_pool!(self.db, |pool| {
            let agents: Vec<i64> = sqlx::query_scalar(agents_sql)
                .bind(ids)
                .fetch_all(&mut *pool)
                .await?;
            let rows = sqlx::query_as::<_, AgentAttachedRow>(tools_sql)
                .bind(ids)
                .fetch_all(&mut *pool)
                .await?;
            Ok::<_, sqlx::Error>((agents, rows))
        })?;
        Ok(group_tools(agents, rows))
    }

    /// The active tools of every agent (agents without tools map to an empty list).
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn tools_of_all(&self) -> Result<HashMap<i64, Vec<AttachedTool>>> {
        let (agents, rows) = on_pool!(self.db, |pool| {
            let agents: Vec<i64> = sqlx::query_scalar("SELECT id FROM agents")
                .fetch_all(&mut *pool)
                .await?;
            let rows = sqlx::query_as::<_, AgentAttachedRow>(attached_select!())
                .fetch_all(&mut *pool)
                .await?;
            Ok::<_, sqlx::Error>((agents, rows))
        })?;
        Ok(group_tools(agents, rows))
    }

    /// The runtime of each existing agent among `agent_ids` (unknown ids are absent).
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn runtimes_of(&self, agent_ids: &[i64]) -> Result<HashMap<i64, AgentRuntime>> {
        if agent_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids = Json(agent_ids);
        let agents_sql = if self.postgres() {
            concat!(
                "SELECT ",
                agent_columns!(),
                " FROM agents WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text($1))"
            )
        } else {
            concat!(
                "SELECT ",
                agent_columns!(),
                " FROM agents WHERE id IN (SELECT value FROM json_each($1))"
            )
        };
        let agents: Vec<Agent> = on_pool!(self.db, |pool| {
            sqlx::query_as(agents_sql).bind(ids).fetch_all(pool).await
        })?;
        let types: Vec<&str> = agents
            .iter()
            .map(|a| a.kind.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let prompts = self.active_prompts(Some(&types)).await?;
        let ids: Vec<i64> = agents.iter().map(|a| a.id).collect();
        let tools = self.tools_of(&ids).await?;
        Ok(assemble(agents, prompts, tools))
    }

    /// The runtime of every agent.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn runtimes_of_all(&self) -> Result<HashMap<i64, AgentRuntime>> {
        let agents: Vec<Agent> = on_pool!(self.db, |pool| {
            sqlx::query_as(concat!("SELECT ", agent_columns!(), " FROM agents"))
                .fetch_all(pool)
                .await
        })?;
        let prompts = self.active_prompts(None).await?;
        let tools = self.tools_of_all().await?;
        Ok(assemble(agents, prompts, tools))
    }

    /// The newest active prompt of each agent type (of `types`, or of all types).
    async fn active_prompts(&self, types: Option<&[&str]>) -> Result<HashMap<String, Prompt>> {
        let prompts: Vec<Prompt> = match types {
            Some([]) => Vec::new(),
            Some(types) => {
                let types = Json(types);
                let sql = if self.postgres() {
                    concat!(
                        "SELECT ",
                        prompt_columns!(),
                        " FROM prompts WHERE is_active = TRUE AND agent_type IN ",
                        "(SELECT value FROM jsonb_array_elements_text($1)) ",
                        "ORDER BY updated_at DESC, id DESC"
                    )
                } else {
                    concat!(
                        "SELECT ",
                        prompt_columns!(),
                        " FROM prompts WHERE is_active = TRUE AND agent_type IN ",
                        "(SELECT value FROM json_each($1)) ORDER BY updated_at DESC, id DESC"
                    )
                };
                on_pool!(self.db, |pool| {
                    sqlx::query_as(sql).bind(types).fetch_all(pool).await
                })?
            }
            None => on_pool!(self.db, |pool| {
                sqlx::query_as(concat!(
                    "SELECT ",
                    prompt_columns!(),
                    " FROM prompts WHERE is_active = TRUE ORDER BY updated_at DESC, id DESC"
                ))
                .fetch_all(pool)
                .await
            })?,
        };
        let mut newest = HashMap::new();
        for prompt in prompts {
            newest.entry(prompt.agent_type.clone()).or_insert(prompt);
        }
        Ok(newest)
    }

    /// The agents each of `tool_ids` is attached to (active or not), without repeats.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn agents_using_tools(&self, tool_ids: &[i64]) -> Result<Vec<i64>> {
        if tool_ids.is_empty() {
            return Ok(Vec::new());
        }
        let tools = Json(tool_ids);
        let sql = if self.postgres() {
            "SELECT DISTINCT agent_id FROM agent_tools WHERE tool_id IN \
             (SELECT value::bigint FROM jsonb_array_elements_text($1)) ORDER BY agent_id"
        } else {
            "SELECT DISTINCT agent_id FROM agent_tools WHERE tool_id IN \
             (SELECT value FROM json_each($1)) ORDER BY agent_id"
        };
        let ids = on_pool!(self.db, |pool| {
            sqlx::query_scalar(sql).bind(tools).fetch_all(pool).await
        })?;
        Ok(ids)
    }

    /// The agents whose tools or runtime a batch of changes may have changed:
    /// agents and attachments by id, tools through their attachments, and — when
    /// `with_prompts` — prompts through the agent types they serve.
    ///
    /// # Errors
    /// [`crate::DbError::Unavailable`] when the database cannot be reached.
    pub async fn affected_agents(
        &self,
        changes: &[Change],
        with_prompts: bool,
    ) -> Result<Vec<i64>> {
        let mut agents = BTreeSet::new();
        let mut tools = Vec::new();
        let mut types = BTreeSet::new();
        for change in changes {
            match change.entity {
                Entity::Agent | Entity::AgentTool => {
                    agents.insert(change.entity_id);
                }
                Entity::Tool => tools.push(change.entity_id),
                Entity::Prompt => {
                    if let Some(scope) = &change.scope {
                        types.insert(scope.as_str());
                    }
                }
            }
        }
        agents.extend(self.agents_using_tools(&tools).await?);
        if with_prompts && !types.is_empty() {
            let types: Vec<&str> = types.into_iter().collect();
            let types = Json(&types);
            let sql = if self.postgres() {
                "SELECT id FROM agents WHERE type IN \
                 (SELECT value FROM jsonb_array_elements_text($1))"
            } else {
                "SELECT id FROM agents WHERE type IN (SELECT value FROM json_each($1))"
            };
            let ids: Vec<i64> = on_pool!(self.db, |pool| {
                sqlx::query_scalar(sql).bind(types).fetch_all(pool).await
            })?;
            agents.extend(ids);
        }
        Ok(agents.into_iter().collect())
    }
}

fn group_tools(agents: Vec<i64>, rows: Vec<AgentAttachedRow>) -> HashMap<i64, Vec<AttachedTool>> {
    let mut by_agent: HashMap<i64, Vec<AttachedTool>> =
        agents.into_iter().map(|id| (id, Vec::new())).collect();
    for AgentAttachedRow { agent_id, row } in rows {
        if let Some(tools) = by_agent.get_mut(&agent_id) {
            tools.push(AttachedTool::from(row));
        }
    }
    for tools in by_agent.values_mut() {
        // Byte order of names, as `Tools::active_for_agent` (not the server's collation).
        tools.sort_by(|a, b| a.name.cmp(&b.name));
    }
    by_agent
}

fn assemble(
    agents: Vec<Agent>,
    prompts: HashMap<String, Prompt>,
    mut tools: HashMap<i64, Vec<AttachedTool>>,
) -> HashMap<i64, AgentRuntime> {
    agents
        .into_iter()
        .map(|agent| {
            let prompt = prompts.get(&agent.kind).cloned();
            let tools = tools.remove(&agent.id).unwrap_or_default();
            (
                agent.id,
                AgentRuntime {
                    agent,
                    prompt,
                    tools,
                },
            )
        })
        .collect()
}
