//! Conformance suite: every test is written once as `async fn name(db: Database)` and runs
//! against a fresh SQLite file database (module `sqlite`) and a fresh PostgreSQL schema (module
//! `postgres`), so both backends are held to the same behaviour.
//!
//! PostgreSQL runs when `GROUNDWORK_TEST_POSTGRES_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); otherwise those tests print a notice and pass,
//! unless `GROUNDWORK_REQUIRE_POSTGRES=1`, which makes them fail.

#[macro_use]
mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration as StdDuration;

use anyhow::ensure;
use chrono::{Duration, SubsecRound};
use groundwork_db::{
    AgentFilter, AgentPatch, AgentStatus, AttachedTool, Attachment, AuditFilter, BackendKind,
    ChangeEvent, Database, DbError, Entity, ExecutionStatus, NewAgent, NewPrompt, NewSession,
    NewTool, NewWorkflow, Op, Page, Prompt, PromptFilter, PromptPatch, ToolFilter, ToolPatch,
    UserFilter, WorkflowPatch, limits, now,
};
use serde_json::json;

use common::{
    ACTOR, affected_since, agent, attach, audit_latest, audit_total, changes_after, digest, drain,
    entry, lock_change_log, next_event, page, postgres_db, prompt, release_change_log, shape,
    sqlite_db, tool, typed_agent, user, workflow,
};

/// Declares each test once per backend: `sqlite::name` and `postgres::name`. Tests listed
/// after `multi_thread:` run on a multi-threaded runtime.
macro_rules! conformance {
    ($($name:ident),* $(,)? ; multi_thread: $($mt:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::sqlite_db().await?).await
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $mt() -> anyhow::Result<()> {
                    super::$mt(super::sqlite_db().await?).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    let Some(pg) = super::postgres_db().await? else { return Ok(()) };
                    // Run the test as its own task so that the schema is dropped even when
                    // an assertion panics, then re-raise the panic.
                    let outcome = tokio::spawn(super::$name(pg.db.clone())).await;
                    pg.cleanup().await;
                    match outcome {
                        Ok(result) => result,
                        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                        Err(err) => Err(err.into()),
                    }
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $mt() -> anyhow::Result<()> {
                    let Some(pg) = super::postgres_db().await? else { return Ok(()) };
                    // Run the test as its own task so that the schema is dropped even when
                    // an assertion panics, then re-raise the panic.
                    let outcome = tokio::spawn(super::$mt(pg.db.clone())).await;
                    pg.cleanup().await;
                    match outcome {
                        Ok(result) => result,
                        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                        Err(err) => Err(err.into()),
                    }
                }
            )*
        }
    };
}

conformance! {
    agents_create_and_get,
    agents_list_filters_and_paging,
    agents_update_partial,
    agents_name_conflicts,
    agents_invalid_input,
    tools_create_and_get,
    tools_list_filters_and_paging,
    tools_update_partial,
    tools_conflicts_and_invalid_input,
    attach_creates_then_updates,
    attach_errors,
    active_for_agent_merges_and_filters,
    detach_removes_attachment,
    tool_delete_detaches_from_every_agent,
    agent_delete_cascades_attachments,
    prompts_create_and_validate,
    prompts_visibility_and_ordering,
    prompts_update_and_delete,
    users_create_get_list,
    digests_create_and_recent,
    workflows_crud,
    workflow_with_execution_cannot_be_deleted,
    executions_lifecycle,
    executions_illegal_moves,
    files_record_list_and_delete,
    files_track_unreferenced_objects,
    executions_list_for_workflow,
    checkpoints_upsert_and_order,
    sessions_lifecycle,
    sessions_invalid_input,
    sessions_keep_user_when_agent_deleted,
    caller_timestamps_stored_at_microsecond_precision,
    audit_every_write_records_one_entry,
    audit_failed_writes_record_nothing,
    audit_filters_and_order,
    audit_since_is_exact_below_a_microsecond,
    audit_record,
    changes_sequence_and_cursor,
    changes_pagination,
    changes_failed_writes_append_nothing,
    changes_tool_delete_reports_each_agent,
    changes_ignore_users_and_workflows,
    timestamps_round_trip,
    page_bounds,
    nul_characters_are_invalid_input,
    name_contains_folds_ascii_case_only,
    changes_since_accepts_the_largest_limit,
    changes_prune_truncates_older_cursors,
    views_tools_of,
    views_runtimes_of,
    views_agents_using_tools,
    views_affected_agents,
    change_scope_recorded,
    listen_changes_notifies;
    multi_thread:
    concurrent_distinct_creates,
    concurrent_same_name_creates,
}

// ---------------------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------------------

async fn agents_create_and_get(db: Database) -> anyhow::Result<()> {
    let before = now();
    let defaults: NewAgent =
        serde_json::from_value(json!({ "name": "triage", "type": "classifier" }))?;
    let created = db.agents().create(ACTOR, &defaults).await?;
    let after = now();
    ensure!(created.id > 0, "id {}", created.id);
    assert_eq!(created.name, "triage");
    assert_eq!(created.kind, "classifier");
    assert_eq!(created.description, None);
    assert_eq!(created.config, json!({}));
    assert_eq!(created.status, AgentStatus::Active);
    assert_eq!(created.created_at, created.updated_at);
    ensure!(
        before <= created.created_at && created.created_at <= after,
        "created_at {} not within [{before}, {after}]",
        created.created_at
    );

    let full = db
        .agents()
        .create(
            ACTOR,
            &NewAgent {
                name: "router".into(),
                kind: "router".into(),
                description: Some("Routes requests".into()),
                config: json!({ "model": "m", "nested": { "list": [1, 2, 3] }, "t": 0.5 }),
                status: AgentStatus::Inactive,
            },
        )
        .await?;
    ensure!(full.id != created.id);
    assert_eq!(full.name, "router");
    assert_eq!(full.kind, "router");
    assert_eq!(full.description.as_deref(), Some("Routes requests"));
    assert_eq!(
        full.config,
        json!({ "model": "m", "nested": { "list": [1, 2, 3] }, "t": 0.5 })
    );
    assert_eq!(full.status, AgentStatus::Inactive);

    assert_eq!(db.agents().get(created.id).await?, created);
    assert_eq!(db.agents().get(full.id).await?, full);
    assert_eq!(db.agents().get_by_name("router").await?, full);
    match db.agents().get(full.id + 10_000).await {
        Err(DbError::NotFound { entity, id }) => {
            assert_eq!(entity, "agent");
            assert_eq!(id, (full.id + 10_000).to_string());
        }
        other => anyhow::bail!("expected NotFound, got {other:?}"),
    }
    expect_err!(NotFound, db.agents().get_by_name("nobody").await);
    expect_err!(NotFound, db.agents().get_by_name("ROUTER").await);

    db.agents().delete(ACTOR, created.id).await?;
    expect_err!(NotFound, db.agents().get(created.id).await);
    expect_err!(NotFound, db.agents().get_by_name("triage").await);
    expect_err!(NotFound, db.agents().delete(ACTOR, created.id).await);
    expect_err!(NotFound, db.agents().delete(ACTOR, full.id + 10_000).await);
    assert_eq!(db.agents().get(full.id).await?, full);
    let all = db
        .agents()
        .list(&AgentFilter::default(), Page::default())
        .await?;
    assert_eq!(all.total, 1);
    assert_eq!(all.items, vec![full]);
    Ok(())
}

async fn agents_list_filters_and_paging(db: Database) -> anyhow::Result<()> {
    let specs = [
        ("alpha", "classifier", AgentStatus::Active),
        ("Beta_x", "router", AgentStatus::Inactive),
        ("gamma%", "classifier", AgentStatus::Archived),
        ("betaXx", "classifier", AgentStatus::Active),
        ("delta", "router", AgentStatus::Active),
    ];
    let mut ids = Vec::new();
    for (name, kind, status) in specs {
        let mut new = agent(name);
        new.kind = kind.into();
        new.status = status;
        ids.push(db.agents().create(ACTOR, &new).await?.id);
    }
    let names = |filter: AgentFilter, page: Page| {
        let db = db.clone();
        async move {
            let listing = db.agents().list(&filter, page).await?;
            let names: Vec<String> = listing.items.into_iter().map(|a| a.name).collect();
            anyhow::Ok((names, listing.total))
        }
    };

    let all = db
        .agents()
        .list(&AgentFilter::default(), Page::default())
        .await?;
    assert_eq!(all.total, 5);
    assert_eq!(all.items.iter().map(|a| a.id).collect::<Vec<_>>(), ids);

    let by_kind = AgentFilter {
        kind: Some("classifier".into()),
        ..Default::default()
    };
    assert_eq!(
        names(by_kind, Page::default()).await?,
        (vec!["alpha".into(), "gamma%".into(), "betaXx".into()], 3)
    );
    let by_status = AgentFilter {
        status: Some(AgentStatus::Inactive),
        ..Default::default()
    };
    assert_eq!(
        names(by_status, Page::default()).await?,
        (vec!["Beta_x".into()], 1)
    );
    let archived = AgentFilter {
        status: Some(AgentStatus::Archived),
        ..Default::default()
    };
    assert_eq!(
        names(archived, Page::default()).await?,
        (vec!["gamma%".into()], 1)
    );

    // Case-insensitive substring.
    let beta = AgentFilter {
        name_contains: Some("BETA".into()),
        ..Default::default()
    };
    assert_eq!(
        names(beta, Page::default()).await?,
        (vec!["Beta_x".into(), "betaXx".into()], 2)
    );
    // `_` is literal: "a_x" must not match "betaXx" (where `_` as a wildcard would match "X").
    let underscore = AgentFilter {
        name_contains: Some("A_X".into()),
        ..Default::default()
    };
    assert_eq!(
        names(underscore, Page::default()).await?,
        (vec!["Beta_x".into()], 1)
    );
    // `%` is literal: it matches only the name containing a percent sign.
    let percent = AgentFilter {
        name_contains: Some("%".into()),
        ..Default::default()
    };
    assert_eq!(
        names(percent, Page::default()).await?,
        (vec!["gamma%".into()], 1)
    );
    let backslash = AgentFilter {
        name_contains: Some("\\".into()),
        ..Default::default()
    };
    assert_eq!(names(backslash, Page::default()).await?, (vec![], 0));
    let none = AgentFilter {
        name_contains: Some("zzz".into()),
        ..Default::default()
    };
    assert_eq!(names(none, Page::default()).await?, (vec![], 0));

    let combined = AgentFilter {
        kind: Some("classifier".into()),
        status: Some(AgentStatus::Active),
        name_contains: Some("a".into()),
    };
    assert_eq!(
        names(combined, Page::default()).await?,
        (vec!["alpha".into(), "betaXx".into()], 2)
    );

    // Paging: limit and offset cut the page, total counts every match.
    assert_eq!(
        names(AgentFilter::default(), page(2, 0)?).await?,
        (vec!["alpha".into(), "Beta_x".into()], 5)
    );
    assert_eq!(
        names(AgentFilter::default(), page(2, 2)?).await?,
        (vec!["gamma%".into(), "betaXx".into()], 5)
    );
    assert_eq!(
        names(AgentFilter::default(), page(2, 4)?).await?,
        (vec!["delta".into()], 5)
    );
    assert_eq!(
        names(AgentFilter::default(), page(10, 50)?).await?,
        (vec![], 5)
    );
    let routers = AgentFilter {
        kind: Some("router".into()),
        ..Default::default()
    };
    assert_eq!(
        names(routers, page(1, 1)?).await?,
        (vec!["delta".into()], 2)
    );

    // `\\` is literal too.
    db.agents().create(ACTOR, &agent("dir\\Name")).await?;
    let backslash = AgentFilter {
        name_contains: Some("R\\n".into()),
        ..Default::default()
    };
    assert_eq!(
        names(backslash, Page::default()).await?,
        (vec!["dir\\Name".into()], 1)
    );
    Ok(())
}

async fn agents_update_partial(db: Database) -> anyhow::Result<()> {
    let created = db
        .agents()
        .create(
            ACTOR,
            &NewAgent {
                name: "writer".into(),
                kind: "llm".into(),
                description: Some("Writes".into()),
                config: json!({ "model": "a" }),
                status: AgentStatus::Active,
            },
        )
        .await?;

    // Only the name changes.
    let renamed = db
        .agents()
        .update(
            ACTOR,
            created.id,
            &AgentPatch {
                name: Some("author".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(renamed.id, created.id);
    assert_eq!(renamed.name, "author");
    assert_eq!(renamed.kind, created.kind);
    assert_eq!(renamed.description, created.description);
    assert_eq!(renamed.config, created.config);
    assert_eq!(renamed.status, created.status);
    assert_eq!(renamed.created_at, created.created_at);
    ensure!(
        renamed.updated_at > created.updated_at,
        "updated_at did not advance: {} -> {}",
        created.updated_at,
        renamed.updated_at
    );
    ensure!(renamed.updated_at >= renamed.created_at);
    assert_eq!(db.agents().get(created.id).await?, renamed);
    expect_err!(NotFound, db.agents().get_by_name("writer").await);

    // `description: Some(None)` clears the description and nothing else.
    let cleared = db
        .agents()
        .update(
            ACTOR,
            created.id,
            &AgentPatch {
                description: Some(None),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(cleared.description, None);
    assert_eq!(cleared.name, "author");
    assert_eq!(cleared.config, json!({ "model": "a" }));
    ensure!(cleared.updated_at >= renamed.updated_at);

    // Several fields at once; the config is replaced, not merged.
    let changed = db
        .agents()
        .update(
            ACTOR,
            created.id,
            &AgentPatch {
                kind: Some("planner".into()),
                description: Some(Some("Plans".into())),
                config: Some(json!({ "temperature": 0 })),
                status: Some(AgentStatus::Archived),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(changed.name, "author");
    assert_eq!(changed.kind, "planner");
    assert_eq!(changed.description.as_deref(), Some("Plans"));
    assert_eq!(changed.config, json!({ "temperature": 0 }));
    assert_eq!(changed.status, AgentStatus::Archived);
    assert_eq!(changed.created_at, created.created_at);
    assert_eq!(db.agents().get(created.id).await?, changed);

    // An empty patch changes nothing and writes neither an audit entry nor a change.
    let audits = audit_total(&db).await?;
    let cursor = db.changes().current_cursor().await?;
    let same = db
        .agents()
        .update(ACTOR, created.id, &AgentPatch::default())
        .await?;
    assert_eq!(same, changed);
    assert_eq!(db.agents().get(created.id).await?, changed);
    assert_eq!(audit_total(&db).await?, audits);
    assert_eq!(db.changes().current_cursor().await?, cursor);

    // Unknown ids.
    expect_err!(
        NotFound,
        db.agents()
            .update(
                ACTOR,
                created.id + 10_000,
                &AgentPatch {
                    name: Some("ghost".into()),
                    ..Default::default()
                }
            )
            .await
    );
    expect_err!(
        NotFound,
        db.agents()
            .update(ACTOR, created.id + 10_000, &AgentPatch::default())
            .await
    );

    // Invalid patches are refused and change nothing.
    for patch in [
        AgentPatch {
            name: Some(String::new()),
            ..Default::default()
        },
        AgentPatch {
            name: Some("x".repeat(limits::NAME + 1)),
            ..Default::default()
        },
        AgentPatch {
            kind: Some("  ".into()),
            ..Default::default()
        },
        AgentPatch {
            config: Some(json!([1, 2])),
            ..Default::default()
        },
        AgentPatch {
            config: Some(json!("text")),
            ..Default::default()
        },
        AgentPatch {
            description: Some(Some("d".repeat(limits::DESCRIPTION + 1))),
            ..Default::default()
        },
    ] {
        expect_err!(Invalid, db.agents().update(ACTOR, created.id, &patch).await);
    }
    assert_eq!(db.agents().get(created.id).await?, changed);
    assert_eq!(audit_total(&db).await?, audits);
    assert_eq!(db.changes().current_cursor().await?, cursor);
    Ok(())
}

async fn agents_name_conflicts(db: Database) -> anyhow::Result<()> {
    let first = db.agents().create(ACTOR, &agent("one")).await?;
    let second = db.agents().create(ACTOR, &agent("two")).await?;

    let mut dup = agent("one");
    dup.kind = "other".into();
    expect_err!(Conflict, db.agents().create(ACTOR, &dup).await);

    expect_err!(
        Conflict,
        db.agents()
            .update(
                ACTOR,
                second.id,
                &AgentPatch {
                    name: Some("one".into()),
                    description: Some(Some("changed".into())),
                    ..Default::default()
                }
            )
            .await
    );
    // The failed rename left both rows as they were.
    assert_eq!(db.agents().get(first.id).await?, first);
    assert_eq!(db.agents().get(second.id).await?, second);

    // Renaming to its own name is not a conflict.
    let same = db
        .agents()
        .update(
            ACTOR,
            first.id,
            &AgentPatch {
                name: Some("one".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(same.name, "one");

    // Once the name is free again it can be reused.
    db.agents().delete(ACTOR, first.id).await?;
    let reused = db.agents().create(ACTOR, &agent("one")).await?;
    ensure!(reused.id != first.id, "ids must not be reused");
    let listing = db
        .agents()
        .list(&AgentFilter::default(), Page::default())
        .await?;
    assert_eq!(listing.total, 2);
    Ok(())
}

async fn agents_invalid_input(db: Database) -> anyhow::Result<()> {
    let mut invalid = vec![
        agent(""),
        agent("   "),
        agent(&"n".repeat(limits::NAME + 1)),
        agent("bad\u{0}name"),
    ];
    let mut no_kind = agent("k");
    no_kind.kind = String::new();
    invalid.push(no_kind);
    let mut long_kind = agent("k");
    long_kind.kind = "t".repeat(limits::TYPE + 1);
    invalid.push(long_kind);
    for config in [json!([]), json!(42), json!("{}"), json!(null), json!(true)] {
        let mut bad = agent("configured");
        bad.config = config;
        invalid.push(bad);
    }
    let mut long_description = agent("described");
    long_description.description = Some("d".repeat(limits::DESCRIPTION + 1));
    invalid.push(long_description);

    for new in &invalid {
        match db.agents().create(ACTOR, new).await {
            Err(DbError::Invalid { .. }) => {}
            other => anyhow::bail!("expected Invalid for {new:?}, got {other:?}"),
        }
    }
    let listing = db
        .agents()
        .list(&AgentFilter::default(), Page::default())
        .await?;
    assert_eq!(listing.total, 0);
    assert_eq!(audit_total(&db).await?, 0);
    assert_eq!(db.changes().current_cursor().await?, 0);

    // The bounds are inclusive and counted in characters, not bytes.
    let longest = "é".repeat(limits::NAME);
    let mut edge = agent(&longest);
    edge.kind = "t".repeat(limits::TYPE);
    edge.description = Some("d".repeat(limits::DESCRIPTION));
    let created = db.agents().create(ACTOR, &edge).await?;
    assert_eq!(created.name, longest);
    assert_eq!(db.agents().get(created.id).await?, created);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------

async fn tools_create_and_get(db: Database) -> anyhow::Result<()> {
    let before = now();
    let defaults: NewTool = serde_json::from_value(json!({ "name": "search", "type": "http" }))?;
    let created = db.tools().create(ACTOR, &defaults).await?;
    let after = now();
    ensure!(created.id > 0);
    assert_eq!(created.name, "search");
    assert_eq!(created.kind, "http");
    assert_eq!(created.description, None);
    assert_eq!(created.config, json!({}));
    ensure!(created.is_active);
    assert_eq!(created.created_at, created.updated_at);
    ensure!(before <= created.created_at && created.created_at <= after);

    let full = db
        .tools()
        .create(
            ACTOR,
            &NewTool {
                name: "sql".into(),
                kind: "database".into(),
                description: Some("Runs SQL".into()),
                config: json!({ "dsn": "x", "limits": { "rows": 10 } }),
                is_active: false,
            },
        )
        .await?;
    assert_eq!(full.description.as_deref(), Some("Runs SQL"));
    assert_eq!(full.config, json!({ "dsn": "x", "limits": { "rows": 10 } }));
    ensure!(!full.is_active);

    assert_eq!(db.tools().get(created.id).await?, created);
    assert_eq!(db.tools().get(full.id).await?, full);
    expect_err!(NotFound, db.tools().get(full.id + 10_000).await);

    db.tools().delete(ACTOR, created.id).await?;
    expect_err!(NotFound, db.tools().get(created.id).await);
    expect_err!(NotFound, db.tools().delete(ACTOR, created.id).await);
    expect_err!(NotFound, db.tools().delete(ACTOR, full.id + 10_000).await);
    let all = db
        .tools()
        .list(&ToolFilter::default(), Page::default())
        .await?;
    assert_eq!(all.total, 1);
    assert_eq!(all.items, vec![full]);
    Ok(())
}

async fn tools_list_filters_and_paging(db: Database) -> anyhow::Result<()> {
    let specs = [
        ("Web_Search", "http", true),
        ("webXsearch", "http", false),
        ("sql%runner", "database", true),
        ("calculator", "function", true),
    ];
    for (name, kind, active) in specs {
        let mut new = tool(name);
        new.kind = kind.into();
        new.is_active = active;
        db.tools().create(ACTOR, &new).await?;
    }
    let names = |filter: ToolFilter, page: Page| {
        let db = db.clone();
        async move {
            let listing = db.tools().list(&filter, page).await?;
            let names: Vec<String> = listing.items.into_iter().map(|t| t.name).collect();
            anyhow::Ok((names, listing.total))
        }
    };
    assert_eq!(
        names(ToolFilter::default(), Page::default()).await?,
        (
            vec![
                "Web_Search".into(),
                "webXsearch".into(),
                "sql%runner".into(),
                "calculator".into()
            ],
            4
        )
    );
    let active = ToolFilter {
        is_active: Some(true),
        ..Default::default()
    };
    assert_eq!(
        names(active, Page::default()).await?,
        (
            vec![
                "Web_Search".into(),
                "sql%runner".into(),
                "calculator".into()
            ],
            3
        )
    );
    let inactive = ToolFilter {
        is_active: Some(false),
        ..Default::default()
    };
    assert_eq!(
        names(inactive, Page::default()).await?,
        (vec!["webXsearch".into()], 1)
    );
    let http = ToolFilter {
        kind: Some("http".into()),
        ..Default::default()
    };
    assert_eq!(
        names(http, Page::default()).await?,
        (vec!["Web_Search".into(), "webXsearch".into()], 2)
    );
    let search = ToolFilter {
        name_contains: Some("SEARCH".into()),
        ..Default::default()
    };
    assert_eq!(
        names(search, Page::default()).await?,
        (vec!["Web_Search".into(), "webXsearch".into()], 2)
    );
    let underscore = ToolFilter {
        name_contains: Some("b_s".into()),
        ..Default::default()
    };
    assert_eq!(
        names(underscore, Page::default()).await?,
        (vec!["Web_Search".into()], 1)
    );
    let percent = ToolFilter {
        name_contains: Some("l%r".into()),
        ..Default::default()
    };
    assert_eq!(
        names(percent, Page::default()).await?,
        (vec!["sql%runner".into()], 1)
    );
    let combined = ToolFilter {
        kind: Some("http".into()),
        is_active: Some(true),
        name_contains: Some("web".into()),
    };
    assert_eq!(
        names(combined, Page::default()).await?,
        (vec!["Web_Search".into()], 1)
    );
    assert_eq!(
        names(ToolFilter::default(), page(2, 1)?).await?,
        (vec!["webXsearch".into(), "sql%runner".into()], 4)
    );
    assert_eq!(
        names(ToolFilter::default(), page(5, 4)?).await?,
        (vec![], 4)
    );
    Ok(())
}

async fn tools_update_partial(db: Database) -> anyhow::Result<()> {
    let created = db
        .tools()
        .create(
            ACTOR,
            &NewTool {
                name: "fetch".into(),
                kind: "http".into(),
                description: Some("Fetches".into()),
                config: json!({ "url": "https://a" }),
                is_active: true,
            },
        )
        .await?;
    let deactivated = db
        .tools()
        .update(
            ACTOR,
            created.id,
            &ToolPatch {
                is_active: Some(false),
                ..Default::default()
            },
        )
        .await?;
    ensure!(!deactivated.is_active);
    assert_eq!(deactivated.name, created.name);
    assert_eq!(deactivated.kind, created.kind);
    assert_eq!(deactivated.description, created.description);
    assert_eq!(deactivated.config, created.config);
    assert_eq!(deactivated.created_at, created.created_at);
    ensure!(deactivated.updated_at > created.updated_at);
    assert_eq!(db.tools().get(created.id).await?, deactivated);

    let cleared = db
        .tools()
        .update(
            ACTOR,
            created.id,
            &ToolPatch {
                description: Some(None),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(cleared.description, None);
    ensure!(!cleared.is_active);

    let changed = db
        .tools()
        .update(
            ACTOR,
            created.id,
            &ToolPatch {
                name: Some("download".into()),
                kind: Some("https".into()),
                config: Some(json!({ "url": "https://b", "retries": 3 })),
                is_active: Some(true),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(changed.name, "download");
    assert_eq!(changed.kind, "https");
    assert_eq!(changed.config, json!({ "url": "https://b", "retries": 3 }));
    ensure!(changed.is_active);
    assert_eq!(changed.description, None);
    assert_eq!(db.tools().get(created.id).await?, changed);

    let audits = audit_total(&db).await?;
    let cursor = db.changes().current_cursor().await?;
    assert_eq!(
        db.tools()
            .update(ACTOR, created.id, &ToolPatch::default())
            .await?,
        changed
    );
    assert_eq!(audit_total(&db).await?, audits);
    assert_eq!(db.changes().current_cursor().await?, cursor);

    expect_err!(
        NotFound,
        db.tools()
            .update(
                ACTOR,
                created.id + 10_000,
                &ToolPatch {
                    is_active: Some(false),
                    ..Default::default()
                }
            )
            .await
    );
    expect_err!(
        NotFound,
        db.tools()
            .update(ACTOR, created.id + 10_000, &ToolPatch::default())
            .await
    );
    assert_eq!(db.tools().get(created.id).await?, changed);
    Ok(())
}

async fn tools_conflicts_and_invalid_input(db: Database) -> anyhow::Result<()> {
    let a = db.tools().create(ACTOR, &tool("a")).await?;
    let b = db.tools().create(ACTOR, &tool("b")).await?;
    expect_err!(Conflict, db.tools().create(ACTOR, &tool("a")).await);
    expect_err!(
        Conflict,
        db.tools()
            .update(
                ACTOR,
                b.id,
                &ToolPatch {
                    name: Some("a".into()),
                    ..Default::default()
                }
            )
            .await
    );
    assert_eq!(db.tools().get(a.id).await?, a);
    assert_eq!(db.tools().get(b.id).await?, b);

    let mut invalid = vec![tool(""), tool(" \t "), tool(&"n".repeat(limits::NAME + 1))];
    let mut no_kind = tool("k");
    no_kind.kind = String::new();
    invalid.push(no_kind);
    for config in [json!([{ "a": 1 }]), json!(1.5), json!(null)] {
        let mut bad = tool("configured");
        bad.config = config;
        invalid.push(bad);
    }
    let mut long_description = tool("described");
    long_description.description = Some("d".repeat(limits::DESCRIPTION + 1));
    invalid.push(long_description);
    for new in &invalid {
        match db.tools().create(ACTOR, new).await {
            Err(DbError::Invalid { .. }) => {}
            other => anyhow::bail!("expected Invalid for {new:?}, got {other:?}"),
        }
    }
    for patch in [
        ToolPatch {
            name: Some(String::new()),
            ..Default::default()
        },
        ToolPatch {
            config: Some(json!([])),
            ..Default::default()
        },
        ToolPatch {
            description: Some(Some("d".repeat(limits::DESCRIPTION + 1))),
            ..Default::default()
        },
    ] {
        expect_err!(Invalid, db.tools().update(ACTOR, a.id, &patch).await);
    }
    assert_eq!(db.tools().get(a.id).await?, a);
    let listing = db
        .tools()
        .list(&ToolFilter::default(), Page::default())
        .await?;
    assert_eq!(listing.total, 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Attachments
// ---------------------------------------------------------------------------------------

async fn attach_creates_then_updates(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("agent")).await?;
    let mut new_tool = tool("search");
    new_tool.config = json!({ "url": "u", "timeout": 30 });
    let t = db.tools().create(ACTOR, &new_tool).await?;

    let before = now();
    let (row, created) = db
        .tools()
        .attach(
            ACTOR,
            a.id,
            t.id,
            &Attachment {
                config_override: Some(json!({ "timeout": 5 })),
                is_active: true,
            },
        )
        .await?;
    ensure!(created, "first attach must report created = true");
    assert_eq!(row.agent_id, a.id);
    assert_eq!(row.tool_id, t.id);
    assert_eq!(row.config_override, Some(json!({ "timeout": 5 })));
    ensure!(row.is_active);
    assert_eq!(row.created_at, row.updated_at);
    ensure!(row.created_at >= before);
    assert_eq!(db.tools().attachments(a.id).await?, vec![row.clone()]);

    let (again, created_again) = db
        .tools()
        .attach(
            ACTOR,
            a.id,
            t.id,
            &Attachment {
                config_override: Some(json!({ "retries": 2 })),
                is_active: false,
            },
        )
        .await?;
    ensure!(!created_again, "second attach must report created = false");
    assert_eq!(again.agent_id, a.id);
    assert_eq!(again.tool_id, t.id);
    // The override is replaced, not merged.
    assert_eq!(again.config_override, Some(json!({ "retries": 2 })));
    ensure!(!again.is_active);
    assert_eq!(again.created_at, row.created_at);
    ensure!(again.updated_at > row.updated_at);
    assert_eq!(db.tools().attachments(a.id).await?, vec![again.clone()]);

    // Attaching without an override clears it.
    let (cleared, created_cleared) = db
        .tools()
        .attach(ACTOR, a.id, t.id, &Attachment::default())
        .await?;
    ensure!(!created_cleared);
    assert_eq!(cleared.config_override, None);
    ensure!(cleared.is_active);
    assert_eq!(db.tools().attachments(a.id).await?, vec![cleared]);

    // Defaults when deserialized: active, no override.
    let parsed: Attachment = serde_json::from_value(json!({}))?;
    assert_eq!(parsed, Attachment::default());
    Ok(())
}

async fn attach_errors(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("agent")).await?;
    let t = db.tools().create(ACTOR, &tool("tool")).await?;
    let audits = audit_total(&db).await?;
    let cursor = db.changes().current_cursor().await?;

    match db
        .tools()
        .attach(ACTOR, a.id + 10_000, t.id, &Attachment::default())
        .await
    {
        Err(DbError::NotFound { entity, .. }) => assert_eq!(entity, "agent"),
        other => anyhow::bail!("expected NotFound(agent), got {other:?}"),
    }
    match db
        .tools()
        .attach(ACTOR, a.id, t.id + 10_000, &Attachment::default())
        .await
    {
        Err(DbError::NotFound { entity, .. }) => assert_eq!(entity, "tool"),
        other => anyhow::bail!("expected NotFound(tool), got {other:?}"),
    }
    for config_override in [json!([1]), json!("x"), json!(3), json!(null)] {
        let attachment = Attachment {
            config_override: Some(config_override),
            is_active: true,
        };
        expect_err!(
            Invalid,
            db.tools().attach(ACTOR, a.id, t.id, &attachment).await
        );
    }
    expect_err!(NotFound, db.tools().active_for_agent(a.id + 10_000).await);
    expect_err!(
        NotFound,
        db.tools().detach(ACTOR, a.id + 10_000, t.id).await
    );
    expect_err!(NotFound, db.tools().detach(ACTOR, a.id, t.id).await);
    expect_err!(
        NotFound,
        db.tools().detach(ACTOR, a.id, t.id + 10_000).await
    );

    assert_eq!(db.tools().attachments(a.id).await?, vec![]);
    assert_eq!(db.tools().active_for_agent(a.id).await?, vec![]);
    assert_eq!(audit_total(&db).await?, audits);
    assert_eq!(db.changes().current_cursor().await?, cursor);
    Ok(())
}

async fn active_for_agent_merges_and_filters(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let other = db.agents().create(ACTOR, &agent("other")).await?;

    let mut zeta = tool("zeta");
    zeta.description = Some("Last letter".into());
    zeta.config = json!({ "url": "u", "timeout": 30, "nested": { "x": 1, "y": 2 } });
    let zeta = db.tools().create(ACTOR, &zeta).await?;
    let mut alpha = tool("alpha");
    alpha.config = json!({ "k": "v" });
    let alpha = db.tools().create(ACTOR, &alpha).await?;
    let mut mid = tool("mid");
    mid.is_active = false;
    let mid = db.tools().create(ACTOR, &mid).await?;
    let beta = db.tools().create(ACTOR, &tool("beta")).await?;
    let _unattached = db.tools().create(ACTOR, &tool("unattached")).await?;
    let omega = db.tools().create(ACTOR, &tool("omega")).await?;

    let override_ = json!({ "timeout": 5, "extra": true, "nested": { "z": 3 } });
    let (zeta_row, _) = db
        .tools()
        .attach(
            ACTOR,
            a.id,
            zeta.id,
            &Attachment {
                config_override: Some(override_.clone()),
                is_active: true,
            },
        )
        .await?;
    let (alpha_row, _) = db
        .tools()
        .attach(ACTOR, a.id, alpha.id, &Attachment::default())
        .await?;
    // An inactive tool with an active attachment, and an active tool with an inactive one.
    db.tools()
        .attach(ACTOR, a.id, mid.id, &Attachment::default())
        .await?;
    db.tools()
        .attach(
            ACTOR,
            a.id,
            beta.id,
            &Attachment {
                config_override: None,
                is_active: false,
            },
        )
        .await?;
    // Another agent's tool.
    db.tools()
        .attach(ACTOR, other.id, omega.id, &Attachment::default())
        .await?;

    let active = db.tools().active_for_agent(a.id).await?;
    let names: Vec<&str> = active.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["alpha", "zeta"]);

    let first = &active[0];
    assert_eq!(first.id, alpha.id);
    assert_eq!(first.kind, "http");
    assert_eq!(first.config, json!({ "k": "v" }));
    assert_eq!(first.config_override, None);
    assert_eq!(first.effective_config, json!({ "k": "v" }));
    assert_eq!(first.attached_at, alpha_row.created_at);

    let second = &active[1];
    assert_eq!(second.id, zeta.id);
    assert_eq!(second.description.as_deref(), Some("Last letter"));
    assert_eq!(second.config, zeta.config);
    assert_eq!(second.config_override, Some(override_));
    // Top-level keys of the override win; nested objects are replaced, not merged.
    assert_eq!(
        second.effective_config,
        json!({ "url": "u", "timeout": 5, "extra": true, "nested": { "z": 3 } })
    );
    assert_eq!(second.attached_at, zeta_row.created_at);
    assert_eq!(second.updated_at, zeta.updated_at.max(zeta_row.updated_at));

    // All four attachments exist, active or not, ordered by tool id.
    let attachments = db.tools().attachments(a.id).await?;
    let tool_ids: Vec<i64> = attachments.iter().map(|x| x.tool_id).collect();
    assert_eq!(tool_ids, vec![zeta.id, alpha.id, mid.id, beta.id]);

    // Re-activating the tool and the attachment brings them in, still sorted by name.
    db.tools()
        .update(
            ACTOR,
            mid.id,
            &ToolPatch {
                is_active: Some(true),
                ..Default::default()
            },
        )
        .await?;
    db.tools()
        .attach(ACTOR, a.id, beta.id, &Attachment::default())
        .await?;
    let names: Vec<String> = db
        .tools()
        .active_for_agent(a.id)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["alpha", "beta", "mid", "zeta"]);

    let other_tools = db.tools().active_for_agent(other.id).await?;
    assert_eq!(other_tools.len(), 1);
    assert_eq!(other_tools[0].name, "omega");
    Ok(())
}

async fn detach_removes_attachment(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let t1 = db.tools().create(ACTOR, &tool("t1")).await?;
    let t2 = db.tools().create(ACTOR, &tool("t2")).await?;
    db.tools()
        .attach(ACTOR, a.id, t1.id, &Attachment::default())
        .await?;
    db.tools()
        .attach(ACTOR, a.id, t2.id, &Attachment::default())
        .await?;

    db.tools().detach(ACTOR, a.id, t1.id).await?;
    let names: Vec<String> = db
        .tools()
        .active_for_agent(a.id)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["t2"]);
    let attachments = db.tools().attachments(a.id).await?;
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].tool_id, t2.id);
    expect_err!(NotFound, db.tools().detach(ACTOR, a.id, t1.id).await);
    // The tool itself is untouched.
    assert_eq!(db.tools().get(t1.id).await?, t1);

    // It can be attached again.
    let (_, created) = db
        .tools()
        .attach(ACTOR, a.id, t1.id, &Attachment::default())
        .await?;
    ensure!(
        created,
        "re-attaching after a detach creates a new attachment"
    );
    Ok(())
}

async fn tool_delete_detaches_from_every_agent(db: Database) -> anyhow::Result<()> {
    let a1 = db.agents().create(ACTOR, &agent("a1")).await?;
    let a2 = db.agents().create(ACTOR, &agent("a2")).await?;
    let t = db.tools().create(ACTOR, &tool("shared")).await?;
    let u = db.tools().create(ACTOR, &tool("own")).await?;
    db.tools()
        .attach(ACTOR, a1.id, t.id, &Attachment::default())
        .await?;
    db.tools()
        .attach(ACTOR, a2.id, t.id, &Attachment::default())
        .await?;
    db.tools()
        .attach(ACTOR, a1.id, u.id, &Attachment::default())
        .await?;

    db.tools().delete(ACTOR, t.id).await?;
    expect_err!(NotFound, db.tools().get(t.id).await);
    let a1_tools: Vec<i64> = db
        .tools()
        .attachments(a1.id)
        .await?
        .into_iter()
        .map(|x| x.tool_id)
        .collect();
    assert_eq!(a1_tools, vec![u.id]);
    assert_eq!(db.tools().attachments(a2.id).await?, vec![]);
    let names: Vec<String> = db
        .tools()
        .active_for_agent(a1.id)
        .await?
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(names, vec!["own"]);
    assert_eq!(db.tools().active_for_agent(a2.id).await?, vec![]);
    // The agents are untouched.
    assert_eq!(db.agents().get(a1.id).await?, a1);
    assert_eq!(db.agents().get(a2.id).await?, a2);
    Ok(())
}

async fn agent_delete_cascades_attachments(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("doomed")).await?;
    let keep = db.agents().create(ACTOR, &agent("keep")).await?;
    let t1 = db.tools().create(ACTOR, &tool("t1")).await?;
    let t2 = db.tools().create(ACTOR, &tool("t2")).await?;
    for t in [&t1, &t2] {
        db.tools()
            .attach(ACTOR, a.id, t.id, &Attachment::default())
            .await?;
    }
    db.tools()
        .attach(ACTOR, keep.id, t1.id, &Attachment::default())
        .await?;

    db.agents().delete(ACTOR, a.id).await?;
    assert_eq!(db.tools().attachments(a.id).await?, vec![]);
    expect_err!(NotFound, db.tools().active_for_agent(a.id).await);
    expect_err!(
        NotFound,
        db.tools()
            .attach(ACTOR, a.id, t1.id, &Attachment::default())
            .await
    );
    // Tools and other agents' attachments survive.
    assert_eq!(db.tools().get(t1.id).await?, t1);
    assert_eq!(db.tools().get(t2.id).await?, t2);
    assert_eq!(db.tools().attachments(keep.id).await?.len(), 1);

    // The cascaded rows are really gone: deleting the tool detaches it from `keep` only.
    let cursor = db.changes().current_cursor().await?;
    db.tools().delete(ACTOR, t1.id).await?;
    let changes = changes_after(&db, cursor).await?;
    assert_eq!(
        shape(&changes),
        vec![
            (Entity::AgentTool, keep.id, Some(t1.id), Op::Delete),
            (Entity::Tool, t1.id, None, Op::Delete),
        ]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Prompts
// ---------------------------------------------------------------------------------------

async fn prompts_create_and_validate(db: Database) -> anyhow::Result<()> {
    let defaults: NewPrompt = serde_json::from_value(json!({
        "name": "greet",
        "content": "Hello!\n\tBe kind.",
        "agent_type": "support",
    }))?;
    assert_eq!(defaults.version, "1");
    let before = now();
    let created = db.prompts().create(ACTOR, &defaults).await?;
    ensure!(created.id > 0);
    assert_eq!(created.name, "greet");
    assert_eq!(created.version, "1");
    assert_eq!(created.content, "Hello!\n\tBe kind.");
    assert_eq!(created.agent_type, "support");
    assert_eq!(created.metadata, json!({}));
    ensure!(created.is_active);
    assert_eq!(created.created_at, created.updated_at);
    ensure!(created.created_at >= before);
    assert_eq!(db.prompts().get(created.id, false).await?, created);
    assert_eq!(db.prompts().get(created.id, true).await?, created);
    expect_err!(NotFound, db.prompts().get(created.id + 10_000, true).await);

    // (name, version) is unique; another version of the same name is fine.
    expect_err!(
        Conflict,
        db.prompts()
            .create(ACTOR, &prompt("greet", "1", "other"))
            .await
    );
    let v2 = db
        .prompts()
        .create(ACTOR, &prompt("greet", "2", "support"))
        .await?;
    assert_eq!(v2.version, "2");
    // The same version under another name is fine too.
    db.prompts()
        .create(ACTOR, &prompt("farewell", "1", "support"))
        .await?;

    let mut invalid = vec![
        prompt("", "1", "support"),
        prompt("  ", "1", "support"),
        prompt(&"n".repeat(limits::NAME + 1), "1", "support"),
        prompt("p", "", "support"),
        prompt("p", &"v".repeat(limits::VERSION + 1), "support"),
        prompt("p", "1", ""),
        prompt("p", "1", &"t".repeat(limits::TYPE + 1)),
    ];
    let mut empty_content = prompt("p", "1", "support");
    empty_content.content = String::new();
    invalid.push(empty_content);
    let mut blank_content = prompt("p", "1", "support");
    blank_content.content = " \n\t ".into();
    invalid.push(blank_content);
    let mut long_content = prompt("p", "1", "support");
    long_content.content = "c".repeat(limits::PROMPT_CONTENT + 1);
    invalid.push(long_content);
    let mut bad_metadata = prompt("p", "1", "support");
    bad_metadata.metadata = json!(["a"]);
    invalid.push(bad_metadata);
    for new in &invalid {
        match db.prompts().create(ACTOR, new).await {
            Err(DbError::Invalid { .. }) => {}
            other => anyhow::bail!(
                "expected Invalid for prompt {:?}/{:?}, got {:?}",
                new.name,
                new.version,
                other.map(|p| p.id)
            ),
        }
    }
    let all = db
        .prompts()
        .list(
            &PromptFilter {
                include_inactive: true,
                ..Default::default()
            },
            Page::default(),
        )
        .await?;
    assert_eq!(all.total, 3);
    Ok(())
}

async fn prompts_visibility_and_ordering(db: Database) -> anyhow::Result<()> {
    let p1 = db
        .prompts()
        .create(ACTOR, &prompt("first", "1", "support"))
        .await?;
    let p2 = db
        .prompts()
        .create(ACTOR, &prompt("second", "1", "support"))
        .await?;
    let p3 = db
        .prompts()
        .create(ACTOR, &prompt("third", "1", "sales"))
        .await?;
    let mut hidden = prompt("hidden", "1", "support");
    hidden.is_active = false;
    let p4 = db.prompts().create(ACTOR, &hidden).await?;
    ensure!(!p4.is_active);

    expect_err!(NotFound, db.prompts().get(p4.id, false).await);
    assert_eq!(db.prompts().get(p4.id, true).await?, p4);

    let ids = |filter: PromptFilter, page: Page| {
        let db = db.clone();
        async move {
            let listing = db.prompts().list(&filter, page).await?;
            let ids: Vec<i64> = listing.items.into_iter().map(|p| p.id).collect();
            anyhow::Ok((ids, listing.total))
        }
    };
    // Newest first; inactive hidden by default.
    assert_eq!(
        ids(PromptFilter::default(), Page::default()).await?,
        (vec![p3.id, p2.id, p1.id], 3)
    );
    let everything = PromptFilter {
        include_inactive: true,
        ..Default::default()
    };
    assert_eq!(
        ids(everything.clone(), Page::default()).await?,
        (vec![p4.id, p3.id, p2.id, p1.id], 4)
    );
    let support = PromptFilter {
        agent_type: Some("support".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(support.clone(), Page::default()).await?,
        (vec![p2.id, p1.id], 2)
    );
    let support_all = PromptFilter {
        agent_type: Some("support".into()),
        include_inactive: true,
        ..Default::default()
    };
    assert_eq!(
        ids(support_all, Page::default()).await?,
        (vec![p4.id, p2.id, p1.id], 3)
    );
    let by_name = PromptFilter {
        name: Some("third".into()),
        ..Default::default()
    };
    assert_eq!(ids(by_name, Page::default()).await?, (vec![p3.id], 1));
    let hidden_by_name = PromptFilter {
        name: Some("hidden".into()),
        ..Default::default()
    };
    assert_eq!(ids(hidden_by_name, Page::default()).await?, (vec![], 0));
    assert_eq!(
        ids(everything.clone(), page(2, 1)?).await?,
        (vec![p3.id, p2.id], 4)
    );

    let for_support: Vec<i64> = db
        .prompts()
        .active_for_agent_type("support")
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(for_support, vec![p2.id, p1.id]);
    assert_eq!(db.prompts().active_for_agent_type("nobody").await?, vec![]);

    // Updating the oldest prompt makes it the newest.
    let updated = db
        .prompts()
        .update(
            ACTOR,
            p1.id,
            &PromptPatch {
                content: Some("Revised.".into()),
                ..Default::default()
            },
        )
        .await?;
    ensure!(updated.updated_at > p3.updated_at);
    assert_eq!(
        ids(PromptFilter::default(), Page::default()).await?,
        (vec![p1.id, p3.id, p2.id], 3)
    );
    let for_support = db.prompts().active_for_agent_type("support").await?;
    assert_eq!(for_support, vec![updated.clone(), p2.clone()]);

    // Deactivating hides a prompt everywhere except with include_inactive.
    let deactivated = db
        .prompts()
        .update(
            ACTOR,
            p2.id,
            &PromptPatch {
                is_active: Some(false),
                ..Default::default()
            },
        )
        .await?;
    ensure!(!deactivated.is_active);
    expect_err!(NotFound, db.prompts().get(p2.id, false).await);
    assert_eq!(ids(support, Page::default()).await?, (vec![p1.id], 1));
    let for_support: Vec<i64> = db
        .prompts()
        .active_for_agent_type("support")
        .await?
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(for_support, vec![p1.id]);
    assert_eq!(
        ids(everything, Page::default()).await?,
        (vec![p2.id, p1.id, p4.id, p3.id], 4)
    );
    Ok(())
}

async fn prompts_update_and_delete(db: Database) -> anyhow::Result<()> {
    let mut new = prompt("summarise", "1", "writer");
    new.metadata = json!({ "owner": "docs" });
    let created = db.prompts().create(ACTOR, &new).await?;
    let other = db
        .prompts()
        .create(ACTOR, &prompt("summarise", "2", "writer"))
        .await?;

    let updated = db
        .prompts()
        .update(
            ACTOR,
            created.id,
            &PromptPatch {
                content: Some("Summarise briefly.".into()),
                metadata: Some(json!({ "owner": "ops" })),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.name, created.name);
    assert_eq!(updated.version, created.version);
    assert_eq!(updated.agent_type, created.agent_type);
    assert_eq!(updated.content, "Summarise briefly.");
    assert_eq!(updated.metadata, json!({ "owner": "ops" }));
    assert_eq!(updated.created_at, created.created_at);
    ensure!(updated.updated_at > created.updated_at);
    assert_eq!(db.prompts().get(created.id, false).await?, updated);

    let renamed = db
        .prompts()
        .update(
            ACTOR,
            created.id,
            &PromptPatch {
                name: Some("digest".into()),
                version: Some("7".into()),
                agent_type: Some("mailer".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(
        (
            renamed.name.as_str(),
            renamed.version.as_str(),
            renamed.agent_type.as_str()
        ),
        ("digest", "7", "mailer")
    );

    // Taking another prompt's (name, version) is a conflict.
    expect_err!(
        Conflict,
        db.prompts()
            .update(
                ACTOR,
                renamed.id,
                &PromptPatch {
                    name: Some("summarise".into()),
                    version: Some("2".into()),
                    ..Default::default()
                }
            )
            .await
    );
    for patch in [
        PromptPatch {
            content: Some(String::new()),
            ..Default::default()
        },
        PromptPatch {
            name: Some(" ".into()),
            ..Default::default()
        },
        PromptPatch {
            version: Some(String::new()),
            ..Default::default()
        },
        PromptPatch {
            agent_type: Some(String::new()),
            ..Default::default()
        },
        PromptPatch {
            metadata: Some(json!(1)),
            ..Default::default()
        },
    ] {
        expect_err!(
            Invalid,
            db.prompts().update(ACTOR, renamed.id, &patch).await
        );
    }
    assert_eq!(db.prompts().get(renamed.id, true).await?, renamed);

    // Inactive prompts can be updated; an empty patch changes nothing.
    let inactive = db
        .prompts()
        .update(
            ACTOR,
            other.id,
            &PromptPatch {
                is_active: Some(false),
                ..Default::default()
            },
        )
        .await?;
    let reworded = db
        .prompts()
        .update(
            ACTOR,
            other.id,
            &PromptPatch {
                content: Some("Still hidden.".into()),
                ..Default::default()
            },
        )
        .await?;
    ensure!(!reworded.is_active);
    assert_eq!(reworded.content, "Still hidden.");
    let audits = audit_total(&db).await?;
    let cursor = db.changes().current_cursor().await?;
    assert_eq!(
        db.prompts()
            .update(ACTOR, inactive.id, &PromptPatch::default())
            .await?,
        reworded
    );
    assert_eq!(audit_total(&db).await?, audits);
    assert_eq!(db.changes().current_cursor().await?, cursor);

    expect_err!(
        NotFound,
        db.prompts()
            .update(
                ACTOR,
                other.id + 10_000,
                &PromptPatch {
                    content: Some("x".into()),
                    ..Default::default()
                }
            )
            .await
    );
    expect_err!(
        NotFound,
        db.prompts()
            .update(ACTOR, other.id + 10_000, &PromptPatch::default())
            .await
    );

    db.prompts().delete(ACTOR, renamed.id).await?;
    expect_err!(NotFound, db.prompts().get(renamed.id, true).await);
    expect_err!(NotFound, db.prompts().delete(ACTOR, renamed.id).await);
    // Deleting an inactive prompt works too.
    db.prompts().delete(ACTOR, other.id).await?;
    let all = db
        .prompts()
        .list(
            &PromptFilter {
                include_inactive: true,
                ..Default::default()
            },
            Page::default(),
        )
        .await?;
    assert_eq!(all.total, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Users and digests
// ---------------------------------------------------------------------------------------

async fn users_create_get_list(db: Database) -> anyhow::Result<()> {
    let before = now();
    let alice = db
        .users()
        .create(
            ACTOR,
            &groundwork_db::NewUser {
                email: "Alice@Example.COM".into(),
                name: "Alice".into(),
            },
        )
        .await?;
    assert_eq!(alice.email, "alice@example.com");
    assert_eq!(alice.name, "Alice");
    assert_eq!(alice.created_at, alice.updated_at);
    ensure!(alice.created_at >= before);
    assert_eq!(db.users().get(alice.id).await?, alice);
    expect_err!(NotFound, db.users().get(alice.id + 10_000).await);

    expect_err!(
        Conflict,
        db.users().create(ACTOR, &user("ALICE@example.com")).await
    );
    expect_err!(
        Conflict,
        db.users()
            .create(ACTOR, &user("  alice@example.com "))
            .await
    );
    for email in [
        "",
        "not-an-email",
        "@example.com",
        "alice@",
        "a b@example.com",
        "a@b@c",
    ] {
        match db.users().create(ACTOR, &user(email)).await {
            Err(DbError::Invalid { .. }) => {}
            other => anyhow::bail!("expected Invalid for email {email:?}, got {other:?}"),
        }
    }
    let long_email = format!("{}@example.com", "a".repeat(limits::EMAIL));
    expect_err!(Invalid, db.users().create(ACTOR, &user(&long_email)).await);
    let mut nameless = user("nameless@example.com");
    nameless.name = String::new();
    expect_err!(Invalid, db.users().create(ACTOR, &nameless).await);

    let bob = db.users().create(ACTOR, &user("bob@example.com")).await?;
    let all = db
        .users()
        .list(&UserFilter::default(), Page::default())
        .await?;
    assert_eq!(all.total, 2);
    assert_eq!(all.items, vec![alice.clone(), bob.clone()]);
    let found = db
        .users()
        .list(
            &UserFilter {
                email: Some("ALICE@EXAMPLE.COM".into()),
            },
            Page::default(),
        )
        .await?;
    assert_eq!(found.total, 1);
    assert_eq!(found.items, vec![alice]);
    let missing = db
        .users()
        .list(
            &UserFilter {
                email: Some("carol@example.com".into()),
            },
            Page::default(),
        )
        .await?;
    assert_eq!((missing.items.len(), missing.total), (0, 0));
    let second_page = db.users().list(&UserFilter::default(), page(1, 1)?).await?;
    assert_eq!(second_page.items, vec![bob]);
    assert_eq!(second_page.total, 2);
    Ok(())
}

async fn digests_create_and_recent(db: Database) -> anyhow::Result<()> {
    let u = db
        .users()
        .create(ACTOR, &user("reader@example.com"))
        .await?;
    let other = db.users().create(ACTOR, &user("other@example.com")).await?;

    let mut first = digest("Week 1");
    first.metadata = json!({ "items": 3 });
    first.period = "2026-W01".into();
    let d1 = db.digests().create(ACTOR, u.id, &first).await?;
    assert_eq!(d1.user_id, u.id);
    assert_eq!(d1.subject, "Week 1");
    assert_eq!(d1.body, "Line one.\nLine two.");
    assert_eq!(d1.period, "2026-W01");
    assert_eq!(d1.metadata, json!({ "items": 3 }));
    let d2 = db.digests().create(ACTOR, u.id, &digest("Week 2")).await?;
    let d3 = db.digests().create(ACTOR, u.id, &digest("Week 3")).await?;
    let d_other = db
        .digests()
        .create(ACTOR, other.id, &digest("Other"))
        .await?;

    let recent = db.digests().recent(u.id, Page::default()).await?;
    assert_eq!(recent.total, 3);
    assert_eq!(recent.items, vec![d3.clone(), d2.clone(), d1.clone()]);
    let first_two = db.digests().recent(u.id, page(2, 0)?).await?;
    assert_eq!(first_two.items, vec![d3, d2]);
    assert_eq!(first_two.total, 3);
    let last = db.digests().recent(u.id, page(2, 2)?).await?;
    assert_eq!(last.items, vec![d1]);
    assert_eq!(last.total, 3);
    let others = db.digests().recent(other.id, Page::default()).await?;
    assert_eq!(others.items, vec![d_other]);
    assert_eq!(others.total, 1);

    expect_err!(
        NotFound,
        db.digests()
            .create(ACTOR, other.id + 10_000, &digest("Nobody"))
            .await
    );
    expect_err!(
        NotFound,
        db.digests()
            .recent(other.id + 10_000, Page::default())
            .await
    );

    let mut invalid = vec![digest(""), digest(&"s".repeat(limits::SUBJECT + 1))];
    let mut no_body = digest("s");
    no_body.body = String::new();
    invalid.push(no_body);
    let mut no_period = digest("s");
    no_period.period = String::new();
    invalid.push(no_period);
    let mut bad_metadata = digest("s");
    bad_metadata.metadata = json!([]);
    invalid.push(bad_metadata);
    for new in &invalid {
        match db.digests().create(ACTOR, u.id, new).await {
            Err(DbError::Invalid { .. }) => {}
            other => anyhow::bail!("expected Invalid for {:?}, got {other:?}", new.subject),
        }
    }
    assert_eq!(db.digests().recent(u.id, Page::default()).await?.total, 3);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Workflows and executions
// ---------------------------------------------------------------------------------------

async fn workflows_crud(db: Database) -> anyhow::Result<()> {
    let defaults: NewWorkflow = serde_json::from_value(json!({ "name": "empty" }))?;
    let empty = db.workflows().create(ACTOR, &defaults).await?;
    assert_eq!(empty.steps, json!([]));
    assert_eq!(empty.description, None);

    let mut new = workflow("ingest");
    new.description = Some("Ingests".into());
    let before = now();
    let ingest = db.workflows().create(ACTOR, &new).await?;
    assert_eq!(ingest.name, "ingest");
    assert_eq!(ingest.description.as_deref(), Some("Ingests"));
    assert_eq!(
        ingest.steps,
        json!([{ "name": "fetch" }, { "name": "summarise" }])
    );
    assert_eq!(ingest.created_at, ingest.updated_at);
    ensure!(ingest.created_at >= before);
    assert_eq!(db.workflows().get(ingest.id).await?, ingest);
    expect_err!(NotFound, db.workflows().get(ingest.id + 10_000).await);

    let all = db.workflows().list(Page::default()).await?;
    assert_eq!(all.total, 2);
    assert_eq!(all.items, vec![empty.clone(), ingest.clone()]);
    let second = db.workflows().list(page(1, 1)?).await?;
    assert_eq!((second.items, second.total), (vec![ingest.clone()], 2));

    expect_err!(
        Conflict,
        db.workflows().create(ACTOR, &workflow("ingest")).await
    );
    for steps in [
        json!({ "name": "fetch" }),
        json!("fetch"),
        json!(null),
        json!(1),
    ] {
        let mut bad = workflow("bad");
        bad.steps = steps;
        expect_err!(Invalid, db.workflows().create(ACTOR, &bad).await);
    }
    expect_err!(Invalid, db.workflows().create(ACTOR, &workflow("")).await);
    let mut long_description = workflow("long");
    long_description.description = Some("d".repeat(limits::DESCRIPTION + 1));
    expect_err!(
        Invalid,
        db.workflows().create(ACTOR, &long_description).await
    );

    // Partial updates.
    let updated = db
        .workflows()
        .update(
            ACTOR,
            ingest.id,
            &WorkflowPatch {
                description: Some(None),
                steps: Some(json!([{ "name": "only" }])),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(updated.name, "ingest");
    assert_eq!(updated.description, None);
    assert_eq!(updated.steps, json!([{ "name": "only" }]));
    assert_eq!(updated.created_at, ingest.created_at);
    ensure!(updated.updated_at > ingest.updated_at);
    assert_eq!(db.workflows().get(ingest.id).await?, updated);
    let renamed = db
        .workflows()
        .update(
            ACTOR,
            ingest.id,
            &WorkflowPatch {
                name: Some("load".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(renamed.name, "load");
    assert_eq!(renamed.steps, updated.steps);
    expect_err!(
        Conflict,
        db.workflows()
            .update(
                ACTOR,
                ingest.id,
                &WorkflowPatch {
                    name: Some("empty".into()),
                    ..Default::default()
                }
            )
            .await
    );
    expect_err!(
        Invalid,
        db.workflows()
            .update(
                ACTOR,
                ingest.id,
                &WorkflowPatch {
                    steps: Some(json!({})),
                    ..Default::default()
                }
            )
            .await
    );
    expect_err!(
        NotFound,
        db.workflows()
            .update(
                ACTOR,
                ingest.id + 10_000,
                &WorkflowPatch {
                    name: Some("x".into()),
                    ..Default::default()
                }
            )
            .await
    );
    let audits = audit_total(&db).await?;
    assert_eq!(
        db.workflows()
            .update(ACTOR, ingest.id, &WorkflowPatch::default())
            .await?,
        renamed
    );
    assert_eq!(audit_total(&db).await?, audits);
    assert_eq!(db.workflows().get(ingest.id).await?, renamed);

    db.workflows().delete(ACTOR, empty.id).await?;
    expect_err!(NotFound, db.workflows().get(empty.id).await);
    expect_err!(NotFound, db.workflows().delete(ACTOR, empty.id).await);
    assert_eq!(db.workflows().list(Page::default()).await?.total, 1);
    Ok(())
}

async fn workflow_with_execution_cannot_be_deleted(db: Database) -> anyhow::Result<()> {
    let w = db.workflows().create(ACTOR, &workflow("busy")).await?;
    let e = db.executions().create(ACTOR, w.id, &json!({})).await?;
    let audits = audit_total(&db).await?;
    expect_err!(Conflict, db.workflows().delete(ACTOR, w.id).await);
    assert_eq!(db.workflows().get(w.id).await?, w);
    assert_eq!(db.executions().get(e.id).await?, e);
    assert_eq!(audit_total(&db).await?, audits);

    let idle = db.workflows().create(ACTOR, &workflow("idle")).await?;
    db.workflows().delete(ACTOR, idle.id).await?;
    expect_err!(NotFound, db.workflows().get(idle.id).await);
    Ok(())
}

async fn executions_lifecycle(db: Database) -> anyhow::Result<()> {
    let w = db.workflows().create(ACTOR, &workflow("run-me")).await?;
    let input = json!({ "x": 1, "tags": ["a", "b"] });
    let before = now();
    let e = db.executions().create(ACTOR, w.id, &input).await?;
    assert_eq!(e.workflow_id, w.id);
    assert_eq!(e.status, ExecutionStatus::Queued);
    assert_eq!(e.input, input);
    assert_eq!(e.output, None);
    assert_eq!(e.error, None);
    assert_eq!(e.attempts, 0);
    assert_eq!(e.started_at, None);
    assert_eq!(e.finished_at, None);
    assert_eq!(e.created_at, e.updated_at);
    ensure!(e.created_at >= before);
    assert_eq!(db.executions().get(e.id).await?, e);
    expect_err!(NotFound, db.executions().get(e.id + 10_000).await);
    expect_err!(
        NotFound,
        db.executions()
            .create(ACTOR, w.id + 10_000, &json!({}))
            .await
    );

    let running = db
        .executions()
        .transition(e.id, ExecutionStatus::Running, None, None)
        .await?;
    assert_eq!(running.status, ExecutionStatus::Running);
    assert_eq!(running.attempts, 1);
    let started_at = running
        .started_at
        .ok_or_else(|| anyhow::anyhow!("started_at not set when running"))?;
    ensure!(started_at >= e.created_at);
    assert_eq!(running.finished_at, None);
    ensure!(running.updated_at >= started_at);
    assert_eq!(running.created_at, e.created_at);

    let retrying = db
        .executions()
        .transition(e.id, ExecutionStatus::Retrying, None, Some("timeout"))
        .await?;
    assert_eq!(retrying.status, ExecutionStatus::Retrying);
    assert_eq!(retrying.error.as_deref(), Some("timeout"));
    assert_eq!(retrying.attempts, 1);
    assert_eq!(retrying.started_at, Some(started_at));
    assert_eq!(retrying.finished_at, None);

    let again = db
        .executions()
        .transition(e.id, ExecutionStatus::Running, None, None)
        .await?;
    assert_eq!(again.status, ExecutionStatus::Running);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.started_at, Some(started_at));

    let output = json!({ "summary": "done", "count": 2 });
    let completed = db
        .executions()
        .transition(e.id, ExecutionStatus::Completed, Some(&output), None)
        .await?;
    assert_eq!(completed.status, ExecutionStatus::Completed);
    assert_eq!(completed.output, Some(output));
    assert_eq!(completed.attempts, 2);
    assert_eq!(completed.started_at, Some(started_at));
    let finished_at = completed
        .finished_at
        .ok_or_else(|| anyhow::anyhow!("finished_at not set when completed"))?;
    ensure!(finished_at >= started_at);
    assert_eq!(completed.input, input);
    assert_eq!(db.executions().get(e.id).await?, completed);

    // Failure path: running -> failed stores the error and the finish time.
    let f = db.executions().create(ACTOR, w.id, &json!({})).await?;
    db.executions()
        .transition(f.id, ExecutionStatus::Running, None, None)
        .await?;
    let failed = db
        .executions()
        .transition(f.id, ExecutionStatus::Failed, None, Some("boom"))
        .await?;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("boom"));
    ensure!(failed.finished_at.is_some());
    assert_eq!(failed.output, None);
    assert_eq!(db.executions().get(f.id).await?, failed);
    Ok(())
}

async fn executions_illegal_moves(db: Database) -> anyhow::Result<()> {
    let w = db.workflows().create(ACTOR, &workflow("strict")).await?;
    let queued = db.executions().create(ACTOR, w.id, &json!({})).await?;
    for target in [
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Retrying,
    ] {
        expect_err!(
            Conflict,
            db.executions()
                .transition(queued.id, target, None, Some("x"))
                .await
        );
    }
    expect_err!(
        Invalid,
        db.executions()
            .transition(queued.id, ExecutionStatus::Queued, None, None)
            .await
    );
    assert_eq!(db.executions().get(queued.id).await?, queued);

    let done = db.executions().create(ACTOR, w.id, &json!({})).await?;
    db.executions()
        .transition(done.id, ExecutionStatus::Running, None, None)
        .await?;
    expect_err!(
        Conflict,
        db.executions()
            .transition(done.id, ExecutionStatus::Running, None, None)
            .await
    );
    let completed = db
        .executions()
        .transition(done.id, ExecutionStatus::Completed, Some(&json!(1)), None)
        .await?;
    for target in [
        ExecutionStatus::Running,
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Retrying,
    ] {
        expect_err!(
            Conflict,
            db.executions()
                .transition(done.id, target, None, None)
                .await
        );
    }
    expect_err!(
        Invalid,
        db.executions()
            .transition(done.id, ExecutionStatus::Queued, None, None)
            .await
    );
    assert_eq!(db.executions().get(done.id).await?, completed);

    expect_err!(
        NotFound,
        db.executions()
            .transition(done.id + 10_000, ExecutionStatus::Running, None, None)
            .await
    );
    expect_err!(
        NotFound,
        db.executions()
            .transition(done.id + 10_000, ExecutionStatus::Completed, None, None)
            .await
    );
    // An oversize error message is refused.
    let running = db.executions().create(ACTOR, w.id, &json!({})).await?;
    let running = db
        .executions()
        .transition(running.id, ExecutionStatus::Running, None, None)
        .await?;
    let long_error = "e".repeat(limits::ERROR + 1);
    expect_err!(
        Invalid,
        db.executions()
            .transition(running.id, ExecutionStatus::Failed, None, Some(&long_error))
            .await
    );
    assert_eq!(db.executions().get(running.id).await?, running);
    Ok(())
}

async fn executions_list_for_workflow(db: Database) -> anyhow::Result<()> {
    let w1 = db.workflows().create(ACTOR, &workflow("w1")).await?;
    let w2 = db.workflows().create(ACTOR, &workflow("w2")).await?;
    let e1 = db
        .executions()
        .create(ACTOR, w1.id, &json!({ "n": 1 }))
        .await?;
    let e2 = db
        .executions()
        .create(ACTOR, w1.id, &json!({ "n": 2 }))
        .await?;
    let e3 = db
        .executions()
        .create(ACTOR, w1.id, &json!({ "n": 3 }))
        .await?;
    let e4 = db
        .executions()
        .create(ACTOR, w2.id, &json!({ "n": 4 }))
        .await?;

    let all = db
        .executions()
        .list_for_workflow(w1.id, Page::default())
        .await?;
    assert_eq!(all.total, 3);
    assert_eq!(all.items, vec![e3.clone(), e2.clone(), e1.clone()]);
    let paged = db
        .executions()
        .list_for_workflow(w1.id, page(2, 1)?)
        .await?;
    assert_eq!(paged.items, vec![e2, e1]);
    assert_eq!(paged.total, 3);
    let other = db
        .executions()
        .list_for_workflow(w2.id, Page::default())
        .await?;
    assert_eq!((other.items, other.total), (vec![e4], 1));
    let none = db
        .executions()
        .list_for_workflow(w2.id + 10_000, Page::default())
        .await?;
    assert_eq!((none.items.len(), none.total), (0, 0));
    Ok(())
}

async fn checkpoints_upsert_and_order(db: Database) -> anyhow::Result<()> {
    let w = db.workflows().create(ACTOR, &workflow("cp")).await?;
    let e = db.executions().create(ACTOR, w.id, &json!({})).await?;
    let other = db.executions().create(ACTOR, w.id, &json!({})).await?;

    let fetch = db
        .executions()
        .save_checkpoint(e.id, "fetch", &json!({ "page": 1 }))
        .await?;
    assert_eq!(fetch.execution_id, e.id);
    assert_eq!(fetch.step, "fetch");
    assert_eq!(fetch.state, json!({ "page": 1 }));
    let parse = db
        .executions()
        .save_checkpoint(e.id, "parse", &json!([1, 2, 3]))
        .await?;
    ensure!(parse.id != fetch.id);
    let other_cp = db
        .executions()
        .save_checkpoint(other.id, "fetch", &json!({ "page": 9 }))
        .await?;
    ensure!(other_cp.id != fetch.id);

    // Saving the same step again replaces its state and keeps its identity and position.
    let fetch2 = db
        .executions()
        .save_checkpoint(e.id, "fetch", &json!({ "page": 2 }))
        .await?;
    assert_eq!(fetch2.id, fetch.id);
    assert_eq!(fetch2.state, json!({ "page": 2 }));
    ensure!(fetch2.created_at >= fetch.created_at);
    assert_eq!(
        db.executions().checkpoints(e.id).await?,
        vec![fetch2, parse]
    );
    assert_eq!(db.executions().checkpoints(other.id).await?, vec![other_cp]);
    assert_eq!(db.executions().checkpoints(e.id + 10_000).await?, vec![]);

    expect_err!(
        NotFound,
        db.executions()
            .save_checkpoint(e.id + 10_000, "fetch", &json!({}))
            .await
    );
    expect_err!(
        Invalid,
        db.executions().save_checkpoint(e.id, "", &json!({})).await
    );
    assert_eq!(db.executions().checkpoints(e.id).await?.len(), 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

async fn sessions_lifecycle(db: Database) -> anyhow::Result<()> {
    let u = db.users().create(ACTOR, &user("s@example.com")).await?;
    let other = db.users().create(ACTOR, &user("o@example.com")).await?;
    let a = db.agents().create(ACTOR, &agent("assistant")).await?;

    let expires = now() + Duration::hours(1);
    let before = now();
    let s1 = db
        .sessions()
        .create(&NewSession {
            user_id: u.id,
            agent_id: Some(a.id),
            metadata: json!({ "ip": "10.0.0.1" }),
            expires_at: expires,
        })
        .await?;
    assert_eq!(s1.user_id, u.id);
    assert_eq!(s1.agent_id, Some(a.id));
    assert_eq!(s1.metadata, json!({ "ip": "10.0.0.1" }));
    assert_eq!(s1.expires_at, expires);
    ensure!(s1.created_at >= before && s1.created_at < expires);

    let parsed: NewSession = serde_json::from_value(json!({
        "user_id": u.id,
        "expires_at": (now() + Duration::hours(2)).to_rfc3339(),
    }))?;
    let s2 = db.sessions().create(&parsed).await?;
    assert_eq!(s2.agent_id, None);
    assert_eq!(s2.metadata, json!({}));
    let s_other = db
        .sessions()
        .create(&NewSession {
            user_id: other.id,
            agent_id: None,
            metadata: json!({}),
            expires_at: now() + Duration::minutes(5),
        })
        .await?;

    assert_eq!(db.sessions().get_active(s1.id).await?, s1);
    expect_err!(NotFound, db.sessions().get_active(s1.id + 10_000).await);
    assert_eq!(
        db.sessions().active_for_user(u.id).await?,
        vec![s2.clone(), s1.clone()]
    );
    assert_eq!(
        db.sessions().active_for_user(other.id).await?,
        vec![s_other.clone()]
    );
    assert_eq!(
        db.sessions().active_for_user(other.id + 10_000).await?,
        vec![]
    );

    db.sessions().delete(s2.id).await?;
    expect_err!(NotFound, db.sessions().get_active(s2.id).await);
    expect_err!(NotFound, db.sessions().delete(s2.id).await);
    assert_eq!(db.sessions().active_for_user(u.id).await?, vec![s1.clone()]);

    // Nothing has expired yet; a day from now, both remaining sessions have.
    assert_eq!(db.sessions().delete_expired(now()).await?, 0);
    assert_eq!(db.sessions().get_active(s1.id).await?, s1);
    // Expiry is inclusive: a session expiring exactly at the instant is deleted.
    assert_eq!(
        db.sessions()
            .delete_expired(s_other.expires_at - Duration::microseconds(1))
            .await?,
        0
    );
    assert_eq!(db.sessions().delete_expired(s_other.expires_at).await?, 1);
    expect_err!(NotFound, db.sessions().get_active(s_other.id).await);
    assert_eq!(
        db.sessions()
            .delete_expired(now() + Duration::days(1))
            .await?,
        1
    );
    expect_err!(NotFound, db.sessions().get_active(s1.id).await);
    assert_eq!(db.sessions().active_for_user(u.id).await?, vec![]);
    assert_eq!(
        db.sessions()
            .delete_expired(now() + Duration::days(1))
            .await?,
        0
    );
    Ok(())
}

async fn sessions_invalid_input(db: Database) -> anyhow::Result<()> {
    let u = db.users().create(ACTOR, &user("s@example.com")).await?;
    let a = db.agents().create(ACTOR, &agent("assistant")).await?;
    let valid = NewSession {
        user_id: u.id,
        agent_id: Some(a.id),
        metadata: json!({}),
        expires_at: now() + Duration::hours(1),
    };

    let mut past = valid.clone();
    past.expires_at = now() - Duration::seconds(1);
    expect_err!(Invalid, db.sessions().create(&past).await);
    let mut unknown_user = valid.clone();
    unknown_user.user_id = u.id + 10_000;
    expect_err!(Invalid, db.sessions().create(&unknown_user).await);
    let mut unknown_agent = valid.clone();
    unknown_agent.agent_id = Some(a.id + 10_000);
    expect_err!(Invalid, db.sessions().create(&unknown_agent).await);
    let mut bad_metadata = valid.clone();
    bad_metadata.metadata = json!(["x"]);
    expect_err!(Invalid, db.sessions().create(&bad_metadata).await);

    assert_eq!(db.sessions().active_for_user(u.id).await?, vec![]);
    assert_eq!(db.sessions().active_for_user(u.id + 10_000).await?, vec![]);
    let created = db.sessions().create(&valid).await?;
    assert_eq!(db.sessions().active_for_user(u.id).await?, vec![created]);
    Ok(())
}

async fn sessions_keep_user_when_agent_deleted(db: Database) -> anyhow::Result<()> {
    let u = db.users().create(ACTOR, &user("s@example.com")).await?;
    let a = db.agents().create(ACTOR, &agent("assistant")).await?;
    let s = db
        .sessions()
        .create(&NewSession {
            user_id: u.id,
            agent_id: Some(a.id),
            metadata: json!({}),
            expires_at: now() + Duration::hours(1),
        })
        .await?;
    db.agents().delete(ACTOR, a.id).await?;
    let after = db.sessions().get_active(s.id).await?;
    assert_eq!(after.agent_id, None);
    assert_eq!(after.user_id, u.id);
    assert_eq!(after.expires_at, s.expires_at);
    Ok(())
}

/// Timestamps given by the caller are kept at the precision both backends store
/// (microseconds), as `groundwork_db::now` promises for the library's own timestamps: the same
/// input must read back the same on SQLite and PostgreSQL.
async fn caller_timestamps_stored_at_microsecond_precision(db: Database) -> anyhow::Result<()> {
    let u = db.users().create(ACTOR, &user("p@example.com")).await?;
    let exact = now() + Duration::hours(1);
    let expires = exact + Duration::nanoseconds(789);
    let s = db
        .sessions()
        .create(&NewSession {
            user_id: u.id,
            agent_id: None,
            metadata: json!({}),
            expires_at: expires,
        })
        .await?;
    let read = db.sessions().get_active(s.id).await?;
    assert_eq!(read, s);
    assert_eq!(
        s.expires_at,
        expires.trunc_subsecs(6),
        "expires_at must be stored at microsecond precision on every backend"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------

/// Checks that exactly one audit entry was added since `before` and that it is the one
/// described; returns the new total.
async fn one_audit(
    db: &Database,
    before: i64,
    actor: &str,
    action: &str,
    entity_type: &str,
    entity_id: &str,
) -> anyhow::Result<i64> {
    let total = audit_total(db).await?;
    ensure!(
        total == before + 1,
        "{action}: expected exactly one new audit entry, got {}",
        total - before
    );
    let entry = audit_latest(db).await?;
    assert_eq!(entry.actor, actor, "{action}: actor");
    assert_eq!(entry.action, action);
    assert_eq!(entry.entity_type, entity_type, "{action}: entity_type");
    assert_eq!(
        entry.entity_id.as_deref(),
        Some(entity_id),
        "{action}: entity_id"
    );
    ensure!(entry.details.is_object(), "{action}: details not an object");
    Ok(total)
}

async fn audit_every_write_records_one_entry(db: Database) -> anyhow::Result<()> {
    let mut n = audit_total(&db).await?;
    assert_eq!(n, 0);

    let a = db.agents().create("alice", &agent("a")).await?;
    n = one_audit(&db, n, "alice", "agent.create", "agent", &a.id.to_string()).await?;
    let patch = AgentPatch {
        status: Some(AgentStatus::Inactive),
        ..Default::default()
    };
    db.agents().update("bob", a.id, &patch).await?;
    n = one_audit(&db, n, "bob", "agent.update", "agent", &a.id.to_string()).await?;
    let latest = audit_latest(&db).await?;
    assert_eq!(latest.details["fields"], json!(["status"]));

    let t = db.tools().create("svc:sync", &tool("t")).await?;
    n = one_audit(&db, n, "svc:sync", "tool.create", "tool", &t.id.to_string()).await?;
    let patch = ToolPatch {
        kind: Some("grpc".into()),
        ..Default::default()
    };
    db.tools().update("alice", t.id, &patch).await?;
    n = one_audit(&db, n, "alice", "tool.update", "tool", &t.id.to_string()).await?;

    let pair = format!("{}/{}", a.id, t.id);
    db.tools()
        .attach("bob", a.id, t.id, &Attachment::default())
        .await?;
    n = one_audit(&db, n, "bob", "tool.attach", "agent_tool", &pair).await?;
    // Updating an attachment is also one entry.
    db.tools()
        .attach("bob", a.id, t.id, &Attachment::default())
        .await?;
    n = one_audit(&db, n, "bob", "tool.attach", "agent_tool", &pair).await?;
    db.tools().detach("carol", a.id, t.id).await?;
    n = one_audit(&db, n, "carol", "tool.detach", "agent_tool", &pair).await?;
    db.tools().delete("alice", t.id).await?;
    n = one_audit(&db, n, "alice", "tool.delete", "tool", &t.id.to_string()).await?;
    db.agents().delete("alice", a.id).await?;
    n = one_audit(&db, n, "alice", "agent.delete", "agent", &a.id.to_string()).await?;

    let p = db
        .prompts()
        .create("writer", &prompt("p", "1", "support"))
        .await?;
    n = one_audit(
        &db,
        n,
        "writer",
        "prompt.create",
        "prompt",
        &p.id.to_string(),
    )
    .await?;
    let patch = PromptPatch {
        content: Some("New".into()),
        ..Default::default()
    };
    db.prompts().update("writer", p.id, &patch).await?;
    n = one_audit(
        &db,
        n,
        "writer",
        "prompt.update",
        "prompt",
        &p.id.to_string(),
    )
    .await?;
    db.prompts().delete("editor", p.id).await?;
    n = one_audit(
        &db,
        n,
        "editor",
        "prompt.delete",
        "prompt",
        &p.id.to_string(),
    )
    .await?;

    let u = db.users().create("admin", &user("u@example.com")).await?;
    n = one_audit(&db, n, "admin", "user.create", "user", &u.id.to_string()).await?;
    let d = db.digests().create("mailer", u.id, &digest("Hi")).await?;
    n = one_audit(
        &db,
        n,
        "mailer",
        "digest.create",
        "email_digest",
        &d.id.to_string(),
    )
    .await?;

    let w = db.workflows().create("ops", &workflow("w")).await?;
    n = one_audit(
        &db,
        n,
        "ops",
        "workflow.create",
        "workflow",
        &w.id.to_string(),
    )
    .await?;
    let patch = WorkflowPatch {
        steps: Some(json!([])),
        ..Default::default()
    };
    db.workflows().update("ops", w.id, &patch).await?;
    n = one_audit(
        &db,
        n,
        "ops",
        "workflow.update",
        "workflow",
        &w.id.to_string(),
    )
    .await?;
    let e = db.executions().create("runner", w.id, &json!({})).await?;
    n = one_audit(
        &db,
        n,
        "runner",
        "execution.create",
        "execution",
        &e.id.to_string(),
    )
    .await?;
    let w2 = db.workflows().create("ops", &workflow("w2")).await?;
    n = one_audit(
        &db,
        n,
        "ops",
        "workflow.create",
        "workflow",
        &w2.id.to_string(),
    )
    .await?;
    db.workflows().delete("ops", w2.id).await?;
    n = one_audit(
        &db,
        n,
        "ops",
        "workflow.delete",
        "workflow",
        &w2.id.to_string(),
    )
    .await?;

    assert_eq!(audit_total(&db).await?, n);
    Ok(())
}

async fn audit_failed_writes_record_nothing(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let b = db.agents().create(ACTOR, &agent("b")).await?;
    let t = db.tools().create(ACTOR, &tool("t")).await?;
    let p = db
        .prompts()
        .create(ACTOR, &prompt("p", "1", "support"))
        .await?;
    let u = db.users().create(ACTOR, &user("u@example.com")).await?;
    let w = db.workflows().create(ACTOR, &workflow("w")).await?;
    db.executions().create(ACTOR, w.id, &json!({})).await?;
    let before = audit_total(&db).await?;
    let latest = audit_latest(&db).await?;

    expect_err!(Conflict, db.agents().create("x", &agent("a")).await);
    let rename = AgentPatch {
        name: Some("a".into()),
        ..Default::default()
    };
    expect_err!(Conflict, db.agents().update("x", b.id, &rename).await);
    expect_err!(Conflict, db.tools().create("x", &tool("t")).await);
    expect_err!(
        Conflict,
        db.prompts().create("x", &prompt("p", "1", "other")).await
    );
    expect_err!(
        Conflict,
        db.users().create("x", &user("U@example.com")).await
    );
    expect_err!(Conflict, db.workflows().create("x", &workflow("w")).await);
    // Refused because the workflow has an execution (the error kind is checked by
    // `workflow_with_execution_cannot_be_deleted`; here only the audit log matters).
    let refused = db.workflows().delete("x", w.id).await;
    ensure!(
        refused.is_err(),
        "deleting a workflow with executions succeeded"
    );
    expect_err!(Invalid, db.agents().create("x", &agent("")).await);
    expect_err!(
        NotFound,
        db.tools()
            .attach("x", a.id, t.id + 10_000, &Attachment::default())
            .await
    );
    expect_err!(NotFound, db.tools().detach("x", a.id, t.id).await);
    expect_err!(NotFound, db.agents().delete("x", a.id + 10_000).await);
    expect_err!(NotFound, db.tools().delete("x", t.id + 10_000).await);
    expect_err!(NotFound, db.prompts().delete("x", p.id + 10_000).await);
    expect_err!(NotFound, db.workflows().delete("x", w.id + 10_000).await);
    expect_err!(
        NotFound,
        db.digests().create("x", u.id + 10_000, &digest("s")).await
    );
    expect_err!(
        NotFound,
        db.executions().create("x", w.id + 10_000, &json!({})).await
    );
    let unknown = AgentPatch {
        kind: Some("k".into()),
        ..Default::default()
    };
    expect_err!(
        NotFound,
        db.agents().update("x", a.id + 10_000, &unknown).await
    );

    assert_eq!(audit_total(&db).await?, before);
    assert_eq!(audit_latest(&db).await?, latest);
    let by_x = db
        .audit()
        .list(
            &AuditFilter {
                actor: Some("x".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await?;
    assert_eq!(by_x.total, 0);
    Ok(())
}

async fn audit_filters_and_order(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create("alice", &agent("a")).await?;
    let t1 = db.tools().create("bob", &tool("t1")).await?;
    let mid = now();
    let t2 = db.tools().create("alice", &tool("t2")).await?;
    let patch = AgentPatch {
        kind: Some("k".into()),
        ..Default::default()
    };
    db.agents().update("bob", a.id, &patch).await?;

    let list = |filter: AuditFilter, page: Page| {
        let db = db.clone();
        async move {
            let listing = db.audit().list(&filter, page).await?;
            let actions: Vec<(String, String)> = listing
                .items
                .iter()
                .map(|e| (e.actor.clone(), e.action.clone()))
                .collect();
            anyhow::Ok((actions, listing.total, listing.items))
        }
    };
    let pair = |actor: &str, action: &str| (actor.to_owned(), action.to_owned());

    let (all, total, entries) = list(AuditFilter::default(), Page::default()).await?;
    assert_eq!(total, 4);
    assert_eq!(
        all,
        vec![
            pair("bob", "agent.update"),
            pair("alice", "tool.create"),
            pair("bob", "tool.create"),
            pair("alice", "agent.create"),
        ]
    );
    for window in entries.windows(2) {
        ensure!(window[0].at >= window[1].at, "not newest first by time");
        ensure!(window[0].id > window[1].id, "not newest first by id");
    }
    assert_eq!(
        entries[1].entity_id.as_deref(),
        Some(t2.id.to_string().as_str())
    );
    assert_eq!(
        entries[2].entity_id.as_deref(),
        Some(t1.id.to_string().as_str())
    );

    let by_actor = AuditFilter {
        actor: Some("alice".into()),
        ..Default::default()
    };
    let (rows, total, _) = list(by_actor, Page::default()).await?;
    assert_eq!(total, 2);
    assert_eq!(
        rows,
        vec![pair("alice", "tool.create"), pair("alice", "agent.create")]
    );
    let by_action = AuditFilter {
        action: Some("tool.create".into()),
        ..Default::default()
    };
    let (rows, total, _) = list(by_action, Page::default()).await?;
    assert_eq!(total, 2);
    assert_eq!(
        rows,
        vec![pair("alice", "tool.create"), pair("bob", "tool.create")]
    );
    let by_entity = AuditFilter {
        entity_type: Some("agent".into()),
        ..Default::default()
    };
    let (rows, total, _) = list(by_entity, Page::default()).await?;
    assert_eq!(total, 2);
    assert_eq!(
        rows,
        vec![pair("bob", "agent.update"), pair("alice", "agent.create")]
    );
    let combined = AuditFilter {
        actor: Some("bob".into()),
        entity_type: Some("tool".into()),
        ..Default::default()
    };
    let (rows, total, _) = list(combined, Page::default()).await?;
    assert_eq!((rows, total), (vec![pair("bob", "tool.create")], 1));
    let nobody = AuditFilter {
        actor: Some("nobody".into()),
        ..Default::default()
    };
    let (rows, total, _) = list(nobody, Page::default()).await?;
    assert_eq!((rows.len(), total), (0, 0));

    // Time windows: since is inclusive, until exclusive.
    let since_mid = AuditFilter {
        since: Some(mid),
        ..Default::default()
    };
    let (rows, total, _) = list(since_mid, Page::default()).await?;
    assert_eq!(
        (rows, total),
        (
            vec![pair("bob", "agent.update"), pair("alice", "tool.create")],
            2
        )
    );
    let until_mid = AuditFilter {
        until: Some(mid),
        ..Default::default()
    };
    let (rows, total, _) = list(until_mid, Page::default()).await?;
    assert_eq!(
        (rows, total),
        (
            vec![pair("bob", "tool.create"), pair("alice", "agent.create")],
            2
        )
    );
    let pivot = &entries[2];
    let at_pivot = AuditFilter {
        since: Some(pivot.at),
        until: Some(pivot.at + Duration::microseconds(1)),
        ..Default::default()
    };
    let (_, total, items) = list(at_pivot, Page::default()).await?;
    assert_eq!((items, total), (vec![pivot.clone()], 1));
    let before_pivot = AuditFilter {
        until: Some(pivot.at),
        ..Default::default()
    };
    let (_, total, items) = list(before_pivot, Page::default()).await?;
    assert_eq!((items, total), (vec![entries[3].clone()], 1));
    let alice_since_mid = AuditFilter {
        actor: Some("alice".into()),
        since: Some(mid),
        ..Default::default()
    };
    let (rows, total, _) = list(alice_since_mid, Page::default()).await?;
    assert_eq!((rows, total), (vec![pair("alice", "tool.create")], 1));

    // Paging.
    let (rows, total, _) = list(AuditFilter::default(), page(2, 1)?).await?;
    assert_eq!(
        (rows, total),
        (
            vec![pair("alice", "tool.create"), pair("bob", "tool.create")],
            4
        )
    );
    Ok(())
}

/// `since` means "at or after this instant" even when the instant has sub-microsecond digits:
/// an entry written strictly before it is not returned, on either backend.
async fn audit_since_is_exact_below_a_microsecond(db: Database) -> anyhow::Result<()> {
    let entry = db
        .audit()
        .record("ops", "cache.flush", "cache", None, json!({}))
        .await?;
    let just_after = entry.at + Duration::nanoseconds(500);
    let filter = AuditFilter {
        since: Some(just_after),
        ..Default::default()
    };
    let listing = db.audit().list(&filter, Page::default()).await?;
    assert_eq!(
        listing.total, 0,
        "an entry at {} was returned for since = {just_after}",
        entry.at
    );
    let filter = AuditFilter {
        until: Some(just_after),
        ..Default::default()
    };
    let listing = db.audit().list(&filter, Page::default()).await?;
    assert_eq!(listing.items, vec![entry]);
    Ok(())
}

async fn audit_record(db: Database) -> anyhow::Result<()> {
    let before = now();
    let entry = db
        .audit()
        .record(
            "ops",
            "cache.flush",
            "cache",
            Some("all"),
            json!({ "keys": 3 }),
        )
        .await?;
    ensure!(entry.id > 0);
    assert_eq!(entry.actor, "ops");
    assert_eq!(entry.action, "cache.flush");
    assert_eq!(entry.entity_type, "cache");
    assert_eq!(entry.entity_id.as_deref(), Some("all"));
    assert_eq!(entry.details, json!({ "keys": 3 }));
    ensure!(entry.at >= before && entry.at <= now());
    assert_eq!(audit_latest(&db).await?, entry);

    let login = db
        .audit()
        .record("alice", "auth.login", "session", None, json!({}))
        .await?;
    assert_eq!(login.entity_id, None);
    assert_eq!(login.details, json!({}));
    ensure!(login.id > entry.id);
    let listing = db
        .audit()
        .list(
            &AuditFilter {
                action: Some("auth.login".into()),
                ..Default::default()
            },
            Page::default(),
        )
        .await?;
    assert_eq!(listing.items, vec![login]);

    expect_err!(
        Invalid,
        db.audit().record("", "a.b", "x", None, json!({})).await
    );
    expect_err!(
        Invalid,
        db.audit().record("ops", " ", "x", None, json!({})).await
    );
    expect_err!(
        Invalid,
        db.audit().record("ops", "a.b", "", None, json!({})).await
    );
    assert_eq!(audit_total(&db).await?, 2);
    // Recording is not a change to a tracked table.
    assert_eq!(db.changes().current_cursor().await?, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Change log
// ---------------------------------------------------------------------------------------

async fn changes_sequence_and_cursor(db: Database) -> anyhow::Result<()> {
    assert_eq!(db.changes().current_cursor().await?, 0);
    let empty = db.changes().since(0, 10).await?;
    assert_eq!(
        (empty.changes.len(), empty.next_cursor, empty.has_more),
        (0, 0, false)
    );

    let before = now();
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let t = db.tools().create(ACTOR, &tool("t")).await?;
    db.tools()
        .attach(ACTOR, a.id, t.id, &Attachment::default())
        .await?;
    let patch = ToolPatch {
        is_active: Some(false),
        ..Default::default()
    };
    db.tools().update(ACTOR, t.id, &patch).await?;
    let patch = AgentPatch {
        description: Some(Some("d".into())),
        ..Default::default()
    };
    db.agents().update(ACTOR, a.id, &patch).await?;
    db.tools().detach(ACTOR, a.id, t.id).await?;
    db.tools().delete(ACTOR, t.id).await?;
    db.agents().delete(ACTOR, a.id).await?;
    let p = db
        .prompts()
        .create(ACTOR, &prompt("p", "1", "support"))
        .await?;
    let patch = PromptPatch {
        content: Some("c".into()),
        ..Default::default()
    };
    db.prompts().update(ACTOR, p.id, &patch).await?;
    db.prompts().delete(ACTOR, p.id).await?;
    let after = now();

    let batch = db.changes().since(0, 100).await?;
    assert_eq!(
        shape(&batch.changes),
        vec![
            (Entity::Agent, a.id, None, Op::Upsert),
            (Entity::Tool, t.id, None, Op::Upsert),
            (Entity::AgentTool, a.id, Some(t.id), Op::Upsert),
            (Entity::Tool, t.id, None, Op::Upsert),
            (Entity::Agent, a.id, None, Op::Upsert),
            (Entity::AgentTool, a.id, Some(t.id), Op::Delete),
            (Entity::Tool, t.id, None, Op::Delete),
            (Entity::Agent, a.id, None, Op::Delete),
            (Entity::Prompt, p.id, None, Op::Upsert),
            (Entity::Prompt, p.id, None, Op::Upsert),
            (Entity::Prompt, p.id, None, Op::Delete),
        ]
    );
    ensure!(!batch.has_more);
    for window in batch.changes.windows(2) {
        ensure!(
            window[0].seq < window[1].seq,
            "seq not strictly increasing: {} then {}",
            window[0].seq,
            window[1].seq
        );
        ensure!(window[0].changed_at <= window[1].changed_at);
    }
    for change in &batch.changes {
        ensure!(change.seq > 0);
        ensure!(before <= change.changed_at && change.changed_at <= after);
    }
    let last = batch
        .changes
        .last()
        .map(|c| c.seq)
        .ok_or_else(|| anyhow::anyhow!("no changes"))?;
    assert_eq!(batch.next_cursor, last);
    assert_eq!(db.changes().current_cursor().await?, last);

    let rest = db.changes().since(batch.next_cursor, 100).await?;
    assert_eq!(rest.changes, vec![]);
    assert_eq!(rest.next_cursor, batch.next_cursor);
    ensure!(!rest.has_more);

    // A cursor in the middle returns exactly the changes after it.
    let middle = batch.changes[4].seq;
    let tail = db.changes().since(middle, 100).await?;
    assert_eq!(tail.changes, batch.changes[5..].to_vec());
    assert_eq!(tail.next_cursor, last);

    // A later write continues after the cursor.
    let again = db.agents().create(ACTOR, &agent("again")).await?;
    let next = db.changes().since(last, 100).await?;
    assert_eq!(
        shape(&next.changes),
        vec![(Entity::Agent, again.id, None, Op::Upsert)]
    );
    ensure!(next.next_cursor > last);
    assert_eq!(db.changes().current_cursor().await?, next.next_cursor);
    Ok(())
}

async fn changes_pagination(db: Database) -> anyhow::Result<()> {
    for i in 0..7 {
        db.agents().create(ACTOR, &agent(&format!("a{i}"))).await?;
    }
    let all = db.changes().since(0, 100).await?;
    assert_eq!(all.changes.len(), 7);

    let mut collected = Vec::new();
    let mut cursor = 0;
    let mut batches = 0;
    loop {
        let batch = db.changes().since(cursor, 3).await?;
        batches += 1;
        ensure!(batch.changes.len() <= 3);
        collected.extend(batch.changes.iter().cloned());
        let expected_cursor = batch.changes.last().map_or(cursor, |c| c.seq);
        assert_eq!(batch.next_cursor, expected_cursor);
        cursor = batch.next_cursor;
        if !batch.has_more {
            break;
        }
        ensure!(batches < 10, "pagination does not terminate");
    }
    assert_eq!(batches, 3);
    assert_eq!(collected, all.changes);

    let first = db.changes().since(0, 3).await?;
    ensure!(first.has_more);
    assert_eq!(first.changes, all.changes[..3].to_vec());
    assert_eq!(first.next_cursor, all.changes[2].seq);
    // A limit equal to what remains is not "more".
    let exact = db.changes().since(0, 7).await?;
    ensure!(!exact.has_more);
    assert_eq!(exact.changes.len(), 7);
    let one = db.changes().since(all.changes[5].seq, 1).await?;
    ensure!(!one.has_more);
    assert_eq!(one.changes, all.changes[6..].to_vec());

    expect_err!(Invalid, db.changes().since(0, 0).await);
    expect_err!(Invalid, db.changes().since(0, -1).await);
    Ok(())
}

async fn changes_failed_writes_append_nothing(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let b = db.agents().create(ACTOR, &agent("b")).await?;
    let t = db.tools().create(ACTOR, &tool("t")).await?;
    let u = db.tools().create(ACTOR, &tool("u")).await?;
    let p = db
        .prompts()
        .create(ACTOR, &prompt("p", "1", "support"))
        .await?;
    db.prompts()
        .create(ACTOR, &prompt("p", "2", "support"))
        .await?;
    let cursor = db.changes().current_cursor().await?;

    expect_err!(Conflict, db.agents().create(ACTOR, &agent("a")).await);
    let rename = AgentPatch {
        name: Some("a".into()),
        ..Default::default()
    };
    expect_err!(Conflict, db.agents().update(ACTOR, b.id, &rename).await);
    expect_err!(Conflict, db.tools().create(ACTOR, &tool("t")).await);
    let rename = ToolPatch {
        name: Some("t".into()),
        ..Default::default()
    };
    expect_err!(Conflict, db.tools().update(ACTOR, u.id, &rename).await);
    expect_err!(
        Conflict,
        db.prompts().create(ACTOR, &prompt("p", "1", "x")).await
    );
    let clash = PromptPatch {
        version: Some("2".into()),
        ..Default::default()
    };
    expect_err!(Conflict, db.prompts().update(ACTOR, p.id, &clash).await);
    expect_err!(
        NotFound,
        db.tools()
            .attach(ACTOR, a.id, t.id + 10_000, &Attachment::default())
            .await
    );
    let bad = Attachment {
        config_override: Some(json!(1)),
        is_active: true,
    };
    expect_err!(Invalid, db.tools().attach(ACTOR, a.id, t.id, &bad).await);
    expect_err!(NotFound, db.tools().detach(ACTOR, a.id, t.id).await);
    expect_err!(NotFound, db.agents().delete(ACTOR, a.id + 10_000).await);
    expect_err!(NotFound, db.tools().delete(ACTOR, t.id + 10_000).await);
    expect_err!(NotFound, db.prompts().delete(ACTOR, p.id + 10_000).await);

    assert_eq!(db.changes().current_cursor().await?, cursor);
    let batch = db.changes().since(cursor, 100).await?;
    assert_eq!(batch.changes, vec![]);
    assert_eq!(batch.next_cursor, cursor);
    Ok(())
}

async fn changes_tool_delete_reports_each_agent(db: Database) -> anyhow::Result<()> {
    let a1 = db.agents().create(ACTOR, &agent("a1")).await?;
    let a2 = db.agents().create(ACTOR, &agent("a2")).await?;
    let a3 = db.agents().create(ACTOR, &agent("a3")).await?;
    let t = db.tools().create(ACTOR, &tool("t")).await?;
    for a in [&a1, &a2] {
        db.tools()
            .attach(ACTOR, a.id, t.id, &Attachment::default())
            .await?;
    }
    let cursor = db.changes().current_cursor().await?;
    db.tools().delete(ACTOR, t.id).await?;
    let changes = changes_after(&db, cursor).await?;
    assert_eq!(changes.len(), 3, "{changes:?}");

    // One AgentTool delete per attached agent (in any order), then the tool itself.
    let detached: HashSet<(Entity, i64, Option<i64>, Op)> =
        shape(&changes[..2]).into_iter().collect();
    let expected: HashSet<_> = [
        (Entity::AgentTool, a1.id, Some(t.id), Op::Delete),
        (Entity::AgentTool, a2.id, Some(t.id), Op::Delete),
    ]
    .into_iter()
    .collect();
    assert_eq!(detached, expected);
    assert_eq!(
        shape(&changes[2..]),
        vec![(Entity::Tool, t.id, None, Op::Delete)]
    );
    ensure!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    ensure!(!changes.iter().any(|c| c.entity_id == a3.id));
    Ok(())
}

async fn changes_ignore_users_and_workflows(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let cursor = db.changes().current_cursor().await?;

    let u = db.users().create(ACTOR, &user("u@example.com")).await?;
    db.digests().create(ACTOR, u.id, &digest("d")).await?;
    let w = db.workflows().create(ACTOR, &workflow("w")).await?;
    let patch = WorkflowPatch {
        name: Some("w2".into()),
        ..Default::default()
    };
    db.workflows().update(ACTOR, w.id, &patch).await?;
    let e = db.executions().create(ACTOR, w.id, &json!({})).await?;
    db.executions()
        .transition(e.id, ExecutionStatus::Running, None, None)
        .await?;
    db.executions()
        .save_checkpoint(e.id, "s", &json!({}))
        .await?;
    let s = db
        .sessions()
        .create(&NewSession {
            user_id: u.id,
            agent_id: Some(a.id),
            metadata: json!({}),
            expires_at: now() + Duration::hours(1),
        })
        .await?;
    db.sessions().delete(s.id).await?;
    let idle = db.workflows().create(ACTOR, &workflow("idle")).await?;
    db.workflows().delete(ACTOR, idle.id).await?;
    db.audit()
        .record(ACTOR, "noop", "none", None, json!({}))
        .await?;

    assert_eq!(db.changes().current_cursor().await?, cursor);
    assert_eq!(changes_after(&db, cursor).await?, vec![]);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

async fn concurrent_distinct_creates(db: Database) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.agents()
                .create(ACTOR, &agent(&format!("agent-{i}")))
                .await
        }));
    }
    let mut ids = BTreeSet::new();
    for task in tasks {
        match task.await? {
            Ok(created) => {
                ids.insert(created.id);
            }
            Err(err) => anyhow::bail!("a concurrent create failed: {err:?}"),
        }
    }
    assert_eq!(ids.len(), 20);
    let listing = db
        .agents()
        .list(&AgentFilter::default(), Page::default())
        .await?;
    assert_eq!(listing.total, 20);

    let changes = changes_after(&db, 0).await?;
    assert_eq!(changes.len(), 20);
    let seqs: BTreeSet<i64> = changes.iter().map(|c| c.seq).collect();
    assert_eq!(seqs.len(), 20, "sequence numbers must be distinct");
    ensure!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    let changed: BTreeSet<i64> = changes.iter().map(|c| c.entity_id).collect();
    assert_eq!(changed, ids);
    ensure!(
        changes
            .iter()
            .all(|c| c.entity == Entity::Agent && c.op == Op::Upsert)
    );
    assert_eq!(audit_total(&db).await?, 20);
    Ok(())
}

async fn concurrent_same_name_creates(db: Database) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.agents().create(ACTOR, &agent("contended")).await
        }));
    }
    let mut ok = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => ok += 1,
            Err(DbError::Conflict { .. }) => conflicts += 1,
            Err(other) => anyhow::bail!("expected Ok or Conflict, got {other:?}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 9));
    let listing = db
        .agents()
        .list(&AgentFilter::default(), Page::default())
        .await?;
    assert_eq!(listing.total, 1);
    assert_eq!(changes_after(&db, 0).await?.len(), 1);
    assert_eq!(audit_total(&db).await?, 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Timestamps and pages
// ---------------------------------------------------------------------------------------

async fn timestamps_round_trip(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    assert_eq!(db.agents().get(a.id).await?, a);
    let t = db.tools().create(ACTOR, &tool("t")).await?;
    assert_eq!(db.tools().get(t.id).await?, t);
    let (row, _) = db
        .tools()
        .attach(ACTOR, a.id, t.id, &Attachment::default())
        .await?;
    assert_eq!(db.tools().attachments(a.id).await?, vec![row]);
    let p = db
        .prompts()
        .create(ACTOR, &prompt("p", "1", "support"))
        .await?;
    assert_eq!(db.prompts().get(p.id, false).await?, p);
    let u = db.users().create(ACTOR, &user("u@example.com")).await?;
    assert_eq!(db.users().get(u.id).await?, u);
    let d = db.digests().create(ACTOR, u.id, &digest("d")).await?;
    assert_eq!(
        db.digests().recent(u.id, Page::default()).await?.items,
        vec![d]
    );
    let w = db.workflows().create(ACTOR, &workflow("w")).await?;
    assert_eq!(db.workflows().get(w.id).await?, w);
    let e = db.executions().create(ACTOR, w.id, &json!({})).await?;
    assert_eq!(db.executions().get(e.id).await?, e);
    let running = db
        .executions()
        .transition(e.id, ExecutionStatus::Running, None, None)
        .await?;
    assert_eq!(db.executions().get(e.id).await?, running);
    let done = db
        .executions()
        .transition(e.id, ExecutionStatus::Completed, None, None)
        .await?;
    assert_eq!(db.executions().get(e.id).await?, done);
    let cp = db
        .executions()
        .save_checkpoint(e.id, "s", &json!({ "k": 1 }))
        .await?;
    assert_eq!(db.executions().checkpoints(e.id).await?, vec![cp]);
    let s = db
        .sessions()
        .create(&NewSession {
            user_id: u.id,
            agent_id: None,
            metadata: json!({}),
            expires_at: now() + Duration::hours(1),
        })
        .await?;
    assert_eq!(db.sessions().get_active(s.id).await?, s);
    let entry = db
        .audit()
        .record(ACTOR, "x.y", "z", None, json!({}))
        .await?;
    assert_eq!(audit_latest(&db).await?, entry);

    // Every stored instant is at microsecond precision.
    let instants = [
        a.created_at,
        t.created_at,
        p.created_at,
        u.created_at,
        w.created_at,
        done.created_at,
        s.created_at,
        entry.at,
    ];
    for at in instants {
        assert_eq!(at, at.trunc_subsecs(6));
    }
    Ok(())
}

async fn page_bounds(_db: Database) -> anyhow::Result<()> {
    expect_err!(Invalid, Page::new(Some(501), None));
    expect_err!(Invalid, Page::new(Some(0), None));
    expect_err!(Invalid, Page::new(Some(-5), None));
    expect_err!(Invalid, Page::new(None, Some(-1)));
    let max = Page::new(Some(Page::MAX_LIMIT), Some(0))?;
    assert_eq!((max.limit(), max.offset()), (500, 0));
    let default = Page::new(None, None)?;
    assert_eq!(default, Page::default());
    assert_eq!(
        (default.limit(), default.offset()),
        (Page::DEFAULT_LIMIT, 0)
    );
    let one = Page::new(Some(1), Some(7))?;
    assert_eq!((one.limit(), one.offset()), (1, 7));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Edge cases where the engines differ unless the library evens them out
// ---------------------------------------------------------------------------------------

/// PostgreSQL cannot store NUL in TEXT or in JSONB strings, SQLite can: for the same input to
/// give the same answer on both, the library must refuse it up front as invalid input (never
/// as `Unavailable`, which tells callers to retry, nor as `Internal`).
async fn nul_characters_are_invalid_input(db: Database) -> anyhow::Result<()> {
    fn kind<T>(result: groundwork_db::Result<T>) -> String {
        match result {
            Ok(_) => "Ok".to_owned(),
            Err(DbError::Invalid { .. }) => "Invalid".to_owned(),
            Err(other) => format!("{other:?}"),
        }
    }
    let u = db.users().create(ACTOR, &user("nul@example.com")).await?;
    let w = db.workflows().create(ACTOR, &workflow("nul")).await?;
    let mut outcomes = Vec::new();

    let mut content = prompt("nul-content", "1", "support");
    content.content = "before\u{0}after".into();
    outcomes.push((
        "prompt content",
        kind(db.prompts().create(ACTOR, &content).await),
    ));
    let mut body = digest("nul body");
    body.body = "before\u{0}after".into();
    outcomes.push((
        "digest body",
        kind(db.digests().create(ACTOR, u.id, &body).await),
    ));
    let mut config = agent("nul-config");
    config.config = json!({ "key": "before\u{0}after" });
    outcomes.push((
        "agent config",
        kind(db.agents().create(ACTOR, &config).await),
    ));
    let mut metadata = prompt("nul-metadata", "1", "support");
    metadata.metadata = json!({ "k\u{0}": 1 });
    outcomes.push((
        "prompt metadata key",
        kind(db.prompts().create(ACTOR, &metadata).await),
    ));
    let input = json!({ "text": "\u{0}" });
    outcomes.push((
        "execution input",
        kind(db.executions().create(ACTOR, w.id, &input).await),
    ));
    let entity_id = Some("id\u{0}");
    let recorded = db
        .audit()
        .record(ACTOR, "x.y", "z", entity_id, json!({}))
        .await;
    outcomes.push(("audit entity_id", kind(recorded)));

    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|(_, outcome)| outcome != "Invalid")
        .collect();
    ensure!(
        wrong.is_empty(),
        "input with NUL characters must be DbError::Invalid; got: {wrong:#?}"
    );
    Ok(())
}

/// `name_contains` is documented as ASCII case-insensitive: `É` and `é` are different letters
/// on both engines, while ASCII letters match in any case.
async fn name_contains_folds_ascii_case_only(db: Database) -> anyhow::Result<()> {
    let created = db.agents().create(ACTOR, &agent("Éclair")).await?;
    let mut t = tool("Éclair");
    t.kind = "http".into();
    db.tools().create(ACTOR, &t).await?;

    let agents = |needle: &str| {
        let db = db.clone();
        let filter = AgentFilter {
            name_contains: Some(needle.to_owned()),
            ..Default::default()
        };
        async move { anyhow::Ok(db.agents().list(&filter, Page::default()).await?.total) }
    };
    let tools = |needle: &str| {
        let db = db.clone();
        let filter = ToolFilter {
            name_contains: Some(needle.to_owned()),
            ..Default::default()
        };
        async move { anyhow::Ok(db.tools().list(&filter, Page::default()).await?.total) }
    };
    assert_eq!(agents("ÉCLAIR").await?, 1, "ASCII letters fold");
    assert_eq!(tools("ÉCLAIR").await?, 1, "ASCII letters fold");
    assert_eq!(
        agents("éclair").await?,
        0,
        "non-ASCII letters must not fold"
    );
    assert_eq!(tools("éclair").await?, 0, "non-ASCII letters must not fold");
    assert_eq!(db.agents().get_by_name("Éclair").await?, created);
    Ok(())
}

/// `since` refuses limits below 1 and accepts any other: the largest limit returns every
/// change (or is refused as invalid), it must not overflow.
async fn changes_since_accepts_the_largest_limit(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    match db.changes().since(0, i64::MAX).await {
        Ok(batch) => {
            assert_eq!(
                shape(&batch.changes),
                vec![(Entity::Agent, a.id, None, Op::Upsert)]
            );
            ensure!(!batch.has_more);
        }
        Err(DbError::Invalid { .. }) => {}
        Err(other) => anyhow::bail!("expected the changes or Invalid, got {other:?}"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Views (batch read models)
// ---------------------------------------------------------------------------------------

/// Tool names, in the order given.
fn tool_names(tools: &[AttachedTool]) -> Vec<&str> {
    tools.iter().map(|t| t.name.as_str()).collect()
}

/// `tools_of` returns, per existing agent, exactly what `active_for_agent` returns (same
/// tools, same byte order of names, same merged config); unknown ids are absent; any batch
/// size works; `tools_of_all` is `tools_of` over every agent.
async fn views_tools_of(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let b = db.agents().create(ACTOR, &agent("b")).await?;
    let c = db.agents().create(ACTOR, &agent("c")).await?;
    let d = db.agents().create(ACTOR, &agent("d")).await?;
    let e = db.agents().create(ACTOR, &agent("e")).await?;
    let unknown = 999;
    ensure!(
        [a.id, b.id, c.id, d.id, e.id]
            .iter()
            .all(|&id| id != unknown),
        "an agent got id {unknown}"
    );

    let mut zeta = tool("Zeta");
    zeta.config = json!({ "url": "u", "timeout": 30, "nested": { "x": 1 } });
    let zeta = db.tools().create(ACTOR, &zeta).await?;
    let mut alpha = tool("alpha");
    alpha.config = json!({ "k": "v" });
    let alpha = db.tools().create(ACTOR, &alpha).await?;
    let mut eclair = tool("Éclair");
    eclair.description = Some("non-ASCII name".into());
    let eclair = db.tools().create(ACTOR, &eclair).await?;
    let beta = db.tools().create(ACTOR, &tool("beta")).await?;
    let mut off = tool("off");
    off.is_active = false;
    let off = db.tools().create(ACTOR, &off).await?;
    let gamma = db.tools().create(ACTOR, &tool("gamma")).await?;
    let omega = db.tools().create(ACTOR, &tool("omega")).await?;

    // a: several tools, attached in neither id nor name order, plus an inactive tool with an
    // active attachment and an active tool with an inactive attachment.
    attach(&db, a.id, beta.id, None, true).await?;
    attach(&db, a.id, eclair.id, Some(json!({ "lang": "fr" })), true).await?;
    let zeta_override = json!({ "timeout": 5, "extra": true, "nested": { "y": 2 } });
    attach(&db, a.id, zeta.id, Some(zeta_override.clone()), true).await?;
    attach(&db, a.id, alpha.id, None, true).await?;
    attach(&db, a.id, off.id, None, true).await?;
    attach(&db, a.id, gamma.id, None, false).await?;
    // b: one tool, shared with a but with its own override.
    attach(&db, b.id, alpha.id, Some(json!({ "k": "b" })), true).await?;
    attach(&db, b.id, gamma.id, None, false).await?;
    // c: attachments, none of them usable. d: no attachments at all. e: another tool.
    attach(&db, c.id, off.id, None, true).await?;
    attach(&db, c.id, gamma.id, Some(json!({ "k": 1 })), false).await?;
    attach(&db, e.id, omega.id, None, true).await?;

    let map = db.views().tools_of(&[a.id, b.id, c.id, unknown]).await?;
    let keys: BTreeSet<i64> = map.keys().copied().collect();
    assert_eq!(keys, BTreeSet::from([a.id, b.id, c.id]), "{map:#?}");

    // Byte order: uppercase before lowercase, non-ASCII last (not the server's collation).
    let a_tools = entry(&map, a.id)?;
    assert_eq!(tool_names(a_tools), vec!["Zeta", "alpha", "beta", "Éclair"]);
    let ids: Vec<i64> = a_tools.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![zeta.id, alpha.id, beta.id, eclair.id]);
    let z = a_tools
        .iter()
        .find(|t| t.id == zeta.id)
        .ok_or_else(|| anyhow::anyhow!("Zeta missing"))?;
    assert_eq!(z.config, zeta.config);
    assert_eq!(z.config_override, Some(zeta_override));
    assert_eq!(
        z.effective_config,
        json!({ "url": "u", "timeout": 5, "extra": true, "nested": { "y": 2 } })
    );
    let a_alpha = a_tools
        .iter()
        .find(|t| t.id == alpha.id)
        .ok_or_else(|| anyhow::anyhow!("alpha missing"))?;
    assert_eq!(a_alpha.config_override, None, "b's override must not leak");
    assert_eq!(a_alpha.effective_config, json!({ "k": "v" }));

    let b_tools = entry(&map, b.id)?;
    assert_eq!(tool_names(b_tools), vec!["alpha"]);
    assert_eq!(b_tools[0].config_override, Some(json!({ "k": "b" })));
    assert_eq!(b_tools[0].effective_config, json!({ "k": "b" }));

    assert_eq!(entry(&map, c.id)?, &Vec::<AttachedTool>::new());

    // Exactly what the per-agent query returns, field for field.
    for id in [a.id, b.id, c.id] {
        assert_eq!(
            entry(&map, id)?,
            &db.tools().active_for_agent(id).await?,
            "agent {id}"
        );
    }

    let only_d = db.views().tools_of(&[d.id]).await?;
    assert_eq!(only_d.len(), 1, "{only_d:?}");
    assert_eq!(entry(&only_d, d.id)?, &Vec::<AttachedTool>::new());
    ensure!(db.views().tools_of(&[]).await?.is_empty());
    ensure!(db.views().tools_of(&[unknown]).await?.is_empty());

    let all_ids = [a.id, b.id, c.id, d.id, e.id];
    let all = db.views().tools_of_all().await?;
    assert_eq!(all, db.views().tools_of(&all_ids).await?);
    assert_eq!(
        all.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(all_ids)
    );
    assert_eq!(tool_names(entry(&all, e.id)?), vec!["omega"]);
    for id in all_ids {
        assert_eq!(
            entry(&all, id)?,
            &db.tools().active_for_agent(id).await?,
            "agent {id}"
        );
    }

    // A large batch (duplicates, unknown and extreme ids included) is one statement.
    let mut batch: Vec<i64> = (1..=1500).map(|i| 1_000_000 + i).collect();
    batch.extend(all_ids);
    batch.extend([a.id, a.id, 0, -1, i64::MAX]);
    ensure!(batch.len() > 1500);
    assert_eq!(db.views().tools_of(&batch).await?, all);

    // Reads are fresh: deactivating a tool removes it from every agent.
    let patch = ToolPatch {
        is_active: Some(false),
        ..Default::default()
    };
    db.tools().update(ACTOR, alpha.id, &patch).await?;
    let map = db.views().tools_of(&[a.id, b.id]).await?;
    assert_eq!(
        tool_names(entry(&map, a.id)?),
        vec!["Zeta", "beta", "Éclair"]
    );
    assert_eq!(entry(&map, b.id)?, &Vec::<AttachedTool>::new());
    assert_eq!(
        entry(&map, a.id)?,
        &db.tools().active_for_agent(a.id).await?
    );
    Ok(())
}

/// The newest active prompt of `kind`, as the prompt repository sees it.
async fn newest_active_prompt(db: &Database, kind: &str) -> anyhow::Result<Option<Prompt>> {
    Ok(db
        .prompts()
        .active_for_agent_type(kind)
        .await?
        .into_iter()
        .next())
}

/// `runtimes_of` pairs each existing agent with the newest active prompt of its type (by
/// last change) and its active tools; it follows prompt updates.
async fn views_runtimes_of(db: Database) -> anyhow::Result<()> {
    let x = db
        .agents()
        .create(ACTOR, &typed_agent("x", "classifier"))
        .await?;
    let x2 = db
        .agents()
        .create(ACTOR, &typed_agent("x2", "classifier"))
        .await?;
    let y = db
        .agents()
        .create(ACTOR, &typed_agent("y", "router"))
        .await?;
    let z = db
        .agents()
        .create(ACTOR, &typed_agent("z", "summarizer"))
        .await?;
    let unknown = 999;
    let t1 = db.tools().create(ACTOR, &tool("t1")).await?;
    let t2 = db.tools().create(ACTOR, &tool("t2")).await?;
    attach(&db, x.id, t1.id, Some(json!({ "a": 1 })), true).await?;
    attach(&db, x.id, t2.id, None, false).await?;

    // Oldest: active classifier prompt; then an inactive classifier draft; then the newest,
    // an active prompt of another type; the router has only an inactive prompt.
    let p_old = db
        .prompts()
        .create(ACTOR, &prompt("p-old", "1", "classifier"))
        .await?;
    let mut draft = prompt("p-draft", "1", "classifier");
    draft.is_active = false;
    let draft = db.prompts().create(ACTOR, &draft).await?;
    let mut route = prompt("p-route", "1", "router");
    route.is_active = false;
    db.prompts().create(ACTOR, &route).await?;
    let p_sum = db
        .prompts()
        .create(ACTOR, &prompt("p-sum", "1", "summarizer"))
        .await?;

    let rt = db
        .views()
        .runtimes_of(&[x.id, x2.id, y.id, z.id, unknown])
        .await?;
    assert_eq!(
        rt.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([x.id, x2.id, y.id, z.id]),
        "{rt:#?}"
    );
    let rx = entry(&rt, x.id)?;
    assert_eq!(rx.agent, db.agents().get(x.id).await?);
    assert_eq!(rx.prompt.as_ref(), Some(&p_old));
    assert_eq!(tool_names(&rx.tools), vec!["t1"]);
    assert_eq!(rx.tools, db.tools().active_for_agent(x.id).await?);
    assert_eq!(rx.tools[0].effective_config, json!({ "a": 1 }));
    let rx2 = entry(&rt, x2.id)?;
    assert_eq!(rx2.prompt.as_ref(), Some(&p_old));
    assert_eq!(rx2.tools, vec![]);
    let ry = entry(&rt, y.id)?;
    assert_eq!(ry.agent, y);
    assert_eq!(ry.prompt, None, "the router has no active prompt");
    assert_eq!(entry(&rt, z.id)?.prompt.as_ref(), Some(&p_sum));
    for runtime in rt.values() {
        assert_eq!(
            runtime.prompt,
            newest_active_prompt(&db, &runtime.agent.kind).await?,
            "agent {}",
            runtime.agent.id
        );
    }

    ensure!(db.views().runtimes_of(&[]).await?.is_empty());
    ensure!(db.views().runtimes_of(&[unknown]).await?.is_empty());
    let all_ids = [x.id, x2.id, y.id, z.id];
    assert_eq!(
        db.views().runtimes_of_all().await?,
        db.views().runtimes_of(&all_ids).await?
    );

    // A newer active prompt of the type wins.
    let p_mid = db
        .prompts()
        .create(ACTOR, &prompt("p-mid", "1", "classifier"))
        .await?;
    let rt = db.views().runtimes_of(&[x.id, x2.id]).await?;
    assert_eq!(entry(&rt, x.id)?.prompt.as_ref(), Some(&p_mid));
    assert_eq!(entry(&rt, x2.id)?.prompt.as_ref(), Some(&p_mid));

    // Updating the older prompt makes it the newest.
    let patch = PromptPatch {
        content: Some("You are p-old, revised.".into()),
        ..Default::default()
    };
    let p_old = db.prompts().update(ACTOR, p_old.id, &patch).await?;
    ensure!(
        p_old.updated_at > p_mid.updated_at,
        "{} <= {}",
        p_old.updated_at,
        p_mid.updated_at
    );
    let rt = db.views().runtimes_of(&[x.id]).await?;
    assert_eq!(entry(&rt, x.id)?.prompt.as_ref(), Some(&p_old));
    let all = db.views().runtimes_of_all().await?;
    assert_eq!(entry(&all, x2.id)?.prompt.as_ref(), Some(&p_old));
    assert_eq!(all, db.views().runtimes_of(&all_ids).await?);

    // Deactivating it falls back to the next newest active one.
    let patch = PromptPatch {
        is_active: Some(false),
        ..Default::default()
    };
    db.prompts().update(ACTOR, p_old.id, &patch).await?;
    let rt = db.views().runtimes_of(&[x.id]).await?;
    assert_eq!(entry(&rt, x.id)?.prompt.as_ref(), Some(&p_mid));

    // Activating the draft makes it the newest active one.
    let patch = PromptPatch {
        is_active: Some(true),
        ..Default::default()
    };
    let draft = db.prompts().update(ACTOR, draft.id, &patch).await?;
    let rt = db.views().runtimes_of(&[x.id]).await?;
    assert_eq!(entry(&rt, x.id)?.prompt.as_ref(), Some(&draft));

    // Moving the summarizer prompt to the router: the router gains it, the summarizer loses it.
    let patch = PromptPatch {
        agent_type: Some("router".into()),
        ..Default::default()
    };
    let moved = db.prompts().update(ACTOR, p_sum.id, &patch).await?;
    let rt = db.views().runtimes_of(&[y.id, z.id]).await?;
    assert_eq!(entry(&rt, y.id)?.prompt.as_ref(), Some(&moved));
    assert_eq!(entry(&rt, z.id)?.prompt, None);
    assert_eq!(
        db.views().runtimes_of_all().await?,
        db.views().runtimes_of(&all_ids).await?
    );
    Ok(())
}

/// `agents_using_tools` lists each agent a tool is attached to (active attachment or not),
/// once, by id.
async fn views_agents_using_tools(db: Database) -> anyhow::Result<()> {
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let b = db.agents().create(ACTOR, &agent("b")).await?;
    let c = db.agents().create(ACTOR, &agent("c")).await?;
    let loner = db.agents().create(ACTOR, &agent("loner")).await?;
    let t1 = db.tools().create(ACTOR, &tool("t1")).await?;
    let mut t2 = tool("t2");
    t2.is_active = false;
    let t2 = db.tools().create(ACTOR, &t2).await?;
    let t3 = db.tools().create(ACTOR, &tool("t3")).await?;
    let t4 = db.tools().create(ACTOR, &tool("t4")).await?;
    let t5 = db.tools().create(ACTOR, &tool("t5")).await?;

    // Attached newest agent first, so that insertion order is not id order.
    attach(&db, c.id, t4.id, None, true).await?;
    attach(&db, b.id, t1.id, None, false).await?;
    attach(&db, a.id, t1.id, None, true).await?;
    attach(&db, c.id, t2.id, None, true).await?;
    attach(&db, a.id, t4.id, None, true).await?;
    attach(&db, loner.id, t5.id, None, true).await?;

    let views = db.views();
    assert_eq!(
        views
            .agents_using_tools(&[t4.id, t3.id, t2.id, t1.id, 999])
            .await?,
        vec![a.id, b.id, c.id]
    );
    assert_eq!(
        views.agents_using_tools(&[t1.id]).await?,
        vec![a.id, b.id],
        "inactive attachments count"
    );
    assert_eq!(
        views.agents_using_tools(&[t2.id]).await?,
        vec![c.id],
        "inactive tools count"
    );
    assert_eq!(
        views.agents_using_tools(&[t4.id, t4.id, t1.id]).await?,
        vec![a.id, b.id, c.id]
    );
    let none: Vec<i64> = Vec::new();
    assert_eq!(views.agents_using_tools(&[t3.id]).await?, none);
    assert_eq!(views.agents_using_tools(&[999]).await?, none);
    assert_eq!(views.agents_using_tools(&[]).await?, none);

    // Detached agents are no longer users.
    db.tools().detach(ACTOR, b.id, t1.id).await?;
    assert_eq!(views.agents_using_tools(&[t1.id]).await?, vec![a.id]);
    Ok(())
}

/// `affected_agents` on real change batches: agents and attachments by id, tools through
/// their attachments, prompts (when asked) through the agent types in their scope.
async fn views_affected_agents(db: Database) -> anyhow::Result<()> {
    let a1 = db
        .agents()
        .create(ACTOR, &typed_agent("a1", "classifier"))
        .await?;
    let a2 = db
        .agents()
        .create(ACTOR, &typed_agent("a2", "classifier"))
        .await?;
    let r1 = db
        .agents()
        .create(ACTOR, &typed_agent("r1", "router"))
        .await?;
    let s1 = db
        .agents()
        .create(ACTOR, &typed_agent("s1", "summarizer"))
        .await?;
    let t = db.tools().create(ACTOR, &tool("t")).await?;
    let u = db.tools().create(ACTOR, &tool("u")).await?;
    let v = db.tools().create(ACTOR, &tool("v")).await?;
    attach(&db, a1.id, t.id, None, true).await?;
    attach(&db, r1.id, t.id, None, false).await?;
    attach(&db, a2.id, u.id, None, true).await?;
    let mut cursor = db.changes().current_cursor().await?;
    let none: Vec<i64> = Vec::new();

    // Agent create, update, delete: that agent.
    let n = db.agents().create(ACTOR, &agent("n")).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![n.id]);
    assert_eq!(got.without_prompts, vec![n.id]);
    let patch = AgentPatch {
        description: Some(Some("changed".into())),
        ..Default::default()
    };
    db.agents().update(ACTOR, a1.id, &patch).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![a1.id]);
    assert_eq!(got.without_prompts, vec![a1.id]);
    db.agents().delete(ACTOR, n.id).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![n.id]);
    assert_eq!(got.without_prompts, vec![n.id]);

    // Attach, re-attach and detach: the agent.
    attach(&db, s1.id, u.id, None, true).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![s1.id]);
    attach(&db, s1.id, u.id, Some(json!({ "k": 1 })), false).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![s1.id]);
    db.tools().detach(ACTOR, s1.id, u.id).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![s1.id]);
    assert_eq!(got.without_prompts, vec![s1.id]);

    // Tool update: every agent it is attached to, active attachment or not.
    let patch = ToolPatch {
        config: Some(json!({ "url": "new" })),
        ..Default::default()
    };
    db.tools().update(ACTOR, t.id, &patch).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![a1.id, r1.id]);
    assert_eq!(got.without_prompts, vec![a1.id, r1.id]);
    // An unattached tool affects nobody.
    db.tools().update(ACTOR, v.id, &patch).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.changes.len(), 1, "{:?}", got.changes);
    assert_eq!(got.with_prompts, none);

    // Tool delete: the agents it was detached from, through the recorded detachments (the
    // attachments are gone by the time the batch is read).
    db.tools().delete(ACTOR, t.id).await?;
    let got = affected_since(&db, &mut cursor).await?;
    let detached: BTreeSet<i64> = got
        .changes
        .iter()
        .filter(|c| c.entity == Entity::AgentTool && c.op == Op::Delete)
        .map(|c| c.entity_id)
        .collect();
    assert_eq!(
        detached,
        BTreeSet::from([a1.id, r1.id]),
        "{:?}",
        got.changes
    );
    assert_eq!(got.with_prompts, vec![a1.id, r1.id]);
    assert_eq!(got.without_prompts, vec![a1.id, r1.id]);

    // Prompt create / update: the agents of its type, only when prompts are asked for.
    let p = db
        .prompts()
        .create(ACTOR, &prompt("p", "1", "classifier"))
        .await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![a1.id, a2.id]);
    assert_eq!(got.without_prompts, none);
    let patch = PromptPatch {
        content: Some("new text".into()),
        ..Default::default()
    };
    db.prompts().update(ACTOR, p.id, &patch).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![a1.id, a2.id]);
    assert_eq!(got.without_prompts, none);

    // Prompt moved from classifier to router: agents of both types, from two changes.
    let patch = PromptPatch {
        agent_type: Some("router".into()),
        ..Default::default()
    };
    db.prompts().update(ACTOR, p.id, &patch).await?;
    let got = affected_since(&db, &mut cursor).await?;
    let mut rows = got.changes.clone();
    rows.sort_by_key(|c| c.seq);
    assert_eq!(rows.len(), 2, "{rows:?}");
    ensure!(rows[0].seq < rows[1].seq);
    ensure!(
        rows.iter()
            .all(|c| c.entity == Entity::Prompt && c.entity_id == p.id && c.op == Op::Upsert),
        "{rows:?}"
    );
    let scopes: BTreeSet<Option<&str>> = rows.iter().map(|c| c.scope.as_deref()).collect();
    assert_eq!(
        scopes,
        BTreeSet::from([Some("classifier"), Some("router")]),
        "{rows:?}"
    );
    assert_eq!(got.with_prompts, vec![a1.id, a2.id, r1.id]);
    assert_eq!(got.without_prompts, none);

    // Prompt delete: the agents of the type it served.
    db.prompts().delete(ACTOR, p.id).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.with_prompts, vec![r1.id]);
    assert_eq!(got.without_prompts, none);

    // A prompt for a type no agent has affects nobody.
    db.prompts()
        .create(ACTOR, &prompt("q", "1", "nobody"))
        .await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.changes.len(), 1);
    assert_eq!(got.with_prompts, none);

    // Several kinds of change in one batch: the union.
    db.agents()
        .update(
            ACTOR,
            s1.id,
            &AgentPatch {
                description: Some(None),
                ..Default::default()
            },
        )
        .await?;
    db.tools()
        .update(
            ACTOR,
            u.id,
            &ToolPatch {
                description: Some(Some("u".into())),
                ..Default::default()
            },
        )
        .await?;
    db.prompts()
        .create(ACTOR, &prompt("r", "1", "router"))
        .await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.changes.len(), 3);
    assert_eq!(got.with_prompts, vec![a2.id, r1.id, s1.id]);
    assert_eq!(got.without_prompts, vec![a2.id, s1.id]);

    // Users, digests and workflows append nothing and affect nobody.
    let user = db.users().create(ACTOR, &user("u@example.com")).await?;
    db.digests().create(ACTOR, user.id, &digest("d")).await?;
    let w = db.workflows().create(ACTOR, &workflow("w")).await?;
    db.workflows().delete(ACTOR, w.id).await?;
    let got = affected_since(&db, &mut cursor).await?;
    assert_eq!(got.changes, vec![]);
    assert_eq!(got.with_prompts, none);
    assert_eq!(got.without_prompts, none);
    assert_eq!(db.views().affected_agents(&[], true).await?, none);
    Ok(())
}

/// `scope` is the agent type for prompt changes (both types when a prompt moves) and empty
/// for every other entity.
async fn change_scope_recorded(db: Database) -> anyhow::Result<()> {
    let cursor = db.changes().current_cursor().await?;
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    let t = db.tools().create(ACTOR, &tool("t")).await?;
    attach(&db, a.id, t.id, None, true).await?;
    db.tools()
        .update(
            ACTOR,
            t.id,
            &ToolPatch {
                is_active: Some(false),
                ..Default::default()
            },
        )
        .await?;
    db.agents()
        .update(
            ACTOR,
            a.id,
            &AgentPatch {
                kind: Some("router".into()),
                ..Default::default()
            },
        )
        .await?;
    db.tools().detach(ACTOR, a.id, t.id).await?;
    attach(&db, a.id, t.id, None, true).await?;
    let p = db
        .prompts()
        .create(ACTOR, &prompt("p", "1", "classifier"))
        .await?;
    let p = db
        .prompts()
        .update(
            ACTOR,
            p.id,
            &PromptPatch {
                is_active: Some(false),
                ..Default::default()
            },
        )
        .await?;
    // Naming the same type is not a move.
    db.prompts()
        .update(
            ACTOR,
            p.id,
            &PromptPatch {
                agent_type: Some("classifier".into()),
                ..Default::default()
            },
        )
        .await?;
    let before_move = db.changes().current_cursor().await?;
    db.prompts()
        .update(
            ACTOR,
            p.id,
            &PromptPatch {
                agent_type: Some("router".into()),
                ..Default::default()
            },
        )
        .await?;
    let after_move = db.changes().current_cursor().await?;
    db.prompts().delete(ACTOR, p.id).await?;
    db.tools().delete(ACTOR, t.id).await?;
    db.agents().delete(ACTOR, a.id).await?;

    let changes = changes_after(&db, cursor).await?;
    let got: Vec<(Entity, Op, Option<&str>)> = changes
        .iter()
        .map(|c| (c.entity, c.op, c.scope.as_deref()))
        .collect();
    let moved: BTreeSet<Option<&str>> = changes
        .iter()
        .filter(|c| c.seq > before_move && c.seq <= after_move)
        .map(|c| c.scope.as_deref())
        .collect();
    assert_eq!(
        moved,
        BTreeSet::from([Some("classifier"), Some("router")]),
        "{changes:#?}"
    );
    // The two rows of the move, in whichever order they were written.
    let move_at = changes
        .iter()
        .position(|c| c.seq > before_move)
        .ok_or_else(|| anyhow::anyhow!("no change after the move"))?;
    let mut expected = vec![
        (Entity::Agent, Op::Upsert, None),
        (Entity::Tool, Op::Upsert, None),
        (Entity::AgentTool, Op::Upsert, None),
        (Entity::Tool, Op::Upsert, None),
        (Entity::Agent, Op::Upsert, None),
        (Entity::AgentTool, Op::Delete, None),
        (Entity::AgentTool, Op::Upsert, None),
        (Entity::Prompt, Op::Upsert, Some("classifier")),
        (Entity::Prompt, Op::Upsert, Some("classifier")),
        (Entity::Prompt, Op::Upsert, Some("classifier")),
    ];
    assert_eq!(move_at, expected.len(), "{changes:#?}");
    expected.extend(got[move_at..move_at + 2].iter().copied());
    expected.extend([
        (Entity::Prompt, Op::Delete, Some("router")),
        (Entity::AgentTool, Op::Delete, None),
        (Entity::Tool, Op::Delete, None),
        (Entity::Agent, Op::Delete, None),
    ]);
    assert_eq!(got, expected);
    ensure!(changes.windows(2).all(|w| w[0].seq < w[1].seq));

    // A move that fails (name and version taken) appends nothing.
    let q1 = db
        .prompts()
        .create(ACTOR, &prompt("q", "1", "classifier"))
        .await?;
    let q2 = db
        .prompts()
        .create(ACTOR, &prompt("q", "2", "router"))
        .await?;
    let cursor = db.changes().current_cursor().await?;
    expect_err!(
        Conflict,
        db.prompts()
            .update(
                ACTOR,
                q2.id,
                &PromptPatch {
                    version: Some(q1.version.clone()),
                    agent_type: Some("classifier".into()),
                    ..Default::default()
                }
            )
            .await
    );
    expect_err!(
        NotFound,
        db.prompts()
            .update(
                ACTOR,
                q2.id + 1000,
                &PromptPatch {
                    agent_type: Some("classifier".into()),
                    ..Default::default()
                }
            )
            .await
    );
    assert_eq!(changes_after(&db, cursor).await?, vec![]);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Change notifications
// ---------------------------------------------------------------------------------------

/// On PostgreSQL a listener hears committed changes; writes that append no change send no
/// notification. On SQLite there is no listener.
///
/// Channels are database-wide and other tests write concurrently (in other schemas), so the
/// positive checks only show that *a* notification arrives. The negative check is isolated
/// by holding the change-log advisory lock on a separate connection: while it is held no
/// transaction anywhere in the database can append a change, so none can notify.
async fn listen_changes_notifies(db: Database) -> anyhow::Result<()> {
    let listener = db.listen_changes().await?;
    if db.backend_kind() == BackendKind::Sqlite {
        ensure!(listener.is_none(), "SQLite must not return a listener");
        return Ok(());
    }
    let Some(mut listener) = listener else {
        anyhow::bail!("PostgreSQL must return a listener");
    };
    let wait = StdDuration::from_secs(5);
    let quiet = StdDuration::from_millis(200);

    // One change.
    let a = db.agents().create(ACTOR, &agent("a")).await?;
    assert_eq!(
        next_event(&mut listener, wait).await?,
        Some(ChangeEvent::Changed),
        "no notification after an agent create"
    );

    // One transaction with several changes (three detachments and the tool).
    let b = db.agents().create(ACTOR, &agent("b")).await?;
    let c = db.agents().create(ACTOR, &agent("c")).await?;
    let t = db.tools().create(ACTOR, &tool("t")).await?;
    for id in [a.id, b.id, c.id] {
        attach(&db, id, t.id, None, true).await?;
    }
    drain(&mut listener, quiet, wait).await?;
    let cursor = db.changes().current_cursor().await?;
    db.tools().delete(ACTOR, t.id).await?;
    assert_eq!(changes_after(&db, cursor).await?.len(), 4);
    assert_eq!(
        next_event(&mut listener, wait).await?,
        Some(ChangeEvent::Changed),
        "no notification after a tool delete"
    );

    // A write that appends no change sends nothing.
    let lock = lock_change_log().await?;
    let outcome = async {
        // Notifications committed before the lock was taken may still be in flight.
        let drained = drain(&mut listener, StdDuration::from_millis(250), wait).await?;
        ensure!(
            drained.is_some(),
            "notifications kept arriving while the change-log lock was held"
        );
        let cursor = db.changes().current_cursor().await?;
        // A write that appended a change would wait for the lock: bound it.
        let created = tokio::time::timeout(
            StdDuration::from_secs(3),
            db.users().create(ACTOR, &user("u@x")),
        )
        .await;
        ensure!(
            created.is_ok(),
            "users().create waited for the change-log lock: it appends a change"
        );
        let _user = created.map_err(anyhow::Error::from)??;
        let heard = next_event(&mut listener, StdDuration::from_millis(300)).await?;
        ensure!(
            heard.is_none(),
            "users().create sent a change notification: {heard:?}"
        );
        assert_eq!(db.changes().current_cursor().await?, cursor);
        Ok(())
    }
    .await;
    // Releases the lock (dropping the connection would too).
    release_change_log(lock).await?;
    outcome?;

    // The listener still works afterwards.
    db.agents().create(ACTOR, &agent("d")).await?;
    assert_eq!(
        next_event(&mut listener, wait).await?,
        Some(ChangeEvent::Changed),
        "no notification after the lock was released"
    );
    Ok(())
}

async fn files_record_list_and_delete(db: Database) -> anyhow::Result<()> {
    use groundwork_db::{FileFilter, NewFile};
    let w = db
        .workflows()
        .create(ACTOR, &workflow("with-files"))
        .await?;
    let e = db.executions().create(ACTOR, w.id, &json!({})).await?;
    let new = |key: &str, execution_id: Option<i64>| NewFile {
        name: "report.pdf".into(),
        content_type: "application/pdf".into(),
        size: 3,
        sha256: "AB".repeat(32),
        storage_key: key.into(),
        owner: ACTOR.into(),
        execution_id,
        digest_id: None,
    };
    for key in ["files/a", "files/b", "files/c", "files/d"] {
        db.files().reserve_key(key).await?;
    }
    let a = db.files().create(&new("files/a", Some(e.id))).await?;
    assert_eq!(a.sha256, "ab".repeat(32), "stored lower case");
    assert_eq!(a.execution_id, Some(e.id));
    assert_eq!(db.files().get(a.id).await?, a);
    let b = db.files().create(&new("files/b", None)).await?;
    expect_err!(Conflict, db.files().create(&new("files/b", None)).await);
    expect_err!(Conflict, db.files().reserve_key("files/b").await);
    expect_err!(
        Invalid,
        db.files().create(&new("files/c", Some(e.id + 1_000))).await
    );
    let mut bad = new("files/d", None);
    bad.sha256 = "xyz".into();
    expect_err!(Invalid, db.files().create(&bad).await);

    let all = db
        .files()
        .list(&FileFilter::default(), Page::default())
        .await?;
    assert_eq!(all.total, 2);
    assert_eq!(all.items[0].id, b.id, "newest first");
    let attached = db
        .files()
        .list(
            &FileFilter {
                execution_id: Some(e.id),
                ..FileFilter::default()
            },
            Page::default(),
        )
        .await?;
    assert_eq!(attached.items, vec![a.clone()]);

    assert_eq!(db.files().delete(ACTOR, a.id).await?, a);
    expect_err!(NotFound, db.files().get(a.id).await);
    expect_err!(NotFound, db.files().delete(ACTOR, a.id).await);
    Ok(())
}

/// The keys of objects no row may reference: an upload's reservation becomes its file's row
/// in one transaction, only while unclaimed; a sweep claims old reservations and the keys of
/// deleted files, in key order, and forgets them once released.
async fn files_track_unreferenced_objects(db: Database) -> anyhow::Result<()> {
    use groundwork_db::{NewFile, UnrecordedReason};
    let new = |key: &str| NewFile {
        name: "a.txt".into(),
        content_type: "text/plain".into(),
        size: 1,
        sha256: "0".repeat(64),
        storage_key: key.into(),
        owner: ACTOR.into(),
        execution_id: None,
        digest_id: None,
    };
    let files = db.files();
    let keys = |claimed: &[groundwork_db::UnrecordedObject]| {
        claimed
            .iter()
            .map(|o| (o.storage_key.clone(), o.reason))
            .collect::<Vec<_>>()
    };
    let past = now() - Duration::hours(1);
    let future = now() + Duration::hours(1);

    // Not reserved: refused.
    expect_err!(Conflict, files.create(&new("k/none")).await);
    expect_err!(Invalid, files.reserve_key("").await);

    files.reserve_key("k/1").await?;
    expect_err!(Conflict, files.reserve_key("k/1").await);
    files.reserve_key("k/2").await?;
    files.reserve_key("k/3").await?;
    // Reservations younger than the cut-off are running uploads: not claimed.
    assert!(files.claim_unrecorded(past, None, 10).await?.is_empty());

    // Recording the file takes the reservation: a sweep never sees it again.
    let one = files.create(&new("k/1")).await?;
    expect_err!(Conflict, files.create(&new("k/1")).await);

    // Older than the cut-off: claimed, in key order, a batch at a time.
    let first = files.claim_unrecorded(future, None, 1).await?;
    assert_eq!(keys(&first), [("k/2".to_owned(), UnrecordedReason::Upload)]);
    assert!(first[0].recorded_at <= now());
    let rest = files.claim_unrecorded(future, Some("k/2"), 10).await?;
    assert_eq!(keys(&rest), [("k/3".to_owned(), UnrecordedReason::Upload)]);
    // A claimed reservation can no longer become a file...
    expect_err!(Conflict, files.create(&new("k/2")).await);
    // ...and stays claimed (whatever the cut-off) until released.
    assert_eq!(files.claim_unrecorded(past, None, 10).await?.len(), 2);
    files.release_key("k/2").await?;
    files.release_key("k/2").await?; // releasing twice is harmless
    assert_eq!(
        keys(&files.claim_unrecorded(past, None, 10).await?),
        [("k/3".to_owned(), UnrecordedReason::Upload)]
    );
    files.release_key("k/3").await?;
    assert!(files.claim_unrecorded(future, None, 10).await?.is_empty());

    // Deleting a file records its key at once, claimed, until its object is removed.
    files.delete(ACTOR, one.id).await?;
    assert_eq!(
        keys(&files.claim_unrecorded(past, None, 10).await?),
        [("k/1".to_owned(), UnrecordedReason::Delete)]
    );
    // A deleted file's key cannot be reserved again before it is released.
    expect_err!(Conflict, files.reserve_key("k/1").await);
    files.release_key("k/1").await?;
    assert!(files.claim_unrecorded(future, None, 10).await?.is_empty());
    Ok(())
}

/// Pruning deletes the changes recorded before a time; a reader whose cursor lies below the
/// last pruned change is told its batch is truncated (it must reload), one at or past it
/// reads on as before.
async fn changes_prune_truncates_older_cursors(db: Database) -> anyhow::Result<()> {
    let start = db.changes().current_cursor().await?;
    db.agents().create(ACTOR, &agent("old-1")).await?;
    db.agents().create(ACTOR, &agent("old-2")).await?;
    let old = db.changes().current_cursor().await?;
    tokio::time::sleep(StdDuration::from_millis(5)).await;
    let cut = now();
    tokio::time::sleep(StdDuration::from_millis(5)).await;
    db.agents().create(ACTOR, &agent("new")).await?;
    let newest = db.changes().current_cursor().await?;

    assert_eq!(
        db.changes().prune(cut - Duration::hours(1)).await?,
        0,
        "nothing that old"
    );
    assert!(!db.changes().since(start, 100).await?.truncated);

    assert_eq!(
        db.changes().prune(cut).await?,
        2,
        "the two changes before the cut"
    );
    for behind in [start, old - 1] {
        let batch = db.changes().since(behind, 100).await?;
        assert!(
            batch.truncated,
            "cursor {behind} is below the pruned changes"
        );
        assert!(batch.changes.is_empty());
        assert_eq!(batch.next_cursor, behind);
    }
    let batch = db.changes().since(old, 100).await?;
    assert!(!batch.truncated);
    assert_eq!(batch.changes.len(), 1, "{batch:?}");
    assert_eq!(batch.next_cursor, newest);
    assert_eq!(db.changes().current_cursor().await?, newest);

    // Pruning again up to the same point changes nothing; a later prune moves on.
    assert_eq!(db.changes().prune(cut).await?, 0);
    assert_eq!(db.changes().prune(now() + Duration::seconds(1)).await?, 1);
    assert!(db.changes().since(old, 100).await?.truncated);
    assert!(!db.changes().since(newest, 100).await?.truncated);
    db.agents().create(ACTOR, &agent("after")).await?;
    assert_eq!(db.changes().since(newest, 100).await?.changes.len(), 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Users: partial update and delete. Declared in a module of their own so that the list at
// the top of the file stays untouched; each test still runs once per backend
// (`users_update_delete::sqlite::...`, `users_update_delete::postgres::...`).
// ---------------------------------------------------------------------------------------

mod users_update_delete {
    use super::*;
    use groundwork_db::users::UserPatch;

    conformance! {
        users_update_partial,
        users_update_conflicts_and_invalid_input,
        users_delete_cascades_sessions_and_digests;
        multi_thread:
    }

    fn patch(value: serde_json::Value) -> anyhow::Result<UserPatch> {
        Ok(serde_json::from_value(value)?)
    }

    async fn users_update_partial(db: Database) -> anyhow::Result<()> {
        let alice = db.users().create(ACTOR, &user("alice@example.com")).await?;
        let bob = db.users().create(ACTOR, &user("bob@example.com")).await?;
        let cursor = db.changes().current_cursor().await?;

        // An empty patch changes nothing, not even `updated_at`, and writes no audit row.
        let audited = audit_total(&db).await?;
        assert_eq!(
            db.users()
                .update(ACTOR, alice.id, &patch(json!({}))?)
                .await?,
            alice
        );
        assert_eq!(audit_total(&db).await?, audited);

        // The name alone.
        let renamed = db
            .users()
            .update(ACTOR, alice.id, &patch(json!({ "name": "Alice A." }))?)
            .await?;
        assert_eq!(renamed.name, "Alice A.");
        assert_eq!(renamed.email, alice.email);
        assert_eq!(renamed.created_at, alice.created_at);
        ensure!(
            renamed.updated_at >= alice.updated_at,
            "updated_at went back: {} < {}",
            renamed.updated_at,
            alice.updated_at
        );
        assert_eq!(db.users().get(alice.id).await?, renamed);
        let entry = audit_latest(&db).await?;
        assert_eq!(entry.actor, ACTOR);
        assert_eq!(entry.action, "user.update");
        assert_eq!(entry.entity_type, "user");
        assert_eq!(entry.entity_id, Some(alice.id.to_string()));
        assert_eq!(entry.details["fields"], json!(["name"]));
        assert_eq!(audit_total(&db).await?, audited + 1);

        // The address alone, normalized as on create; the user's own address in another
        // case is not a conflict.
        let moved = db
            .users()
            .update(
                ACTOR,
                alice.id,
                &patch(json!({ "email": "  Alice@New.Example " }))?,
            )
            .await?;
        assert_eq!(moved.email, "alice@new.example");
        assert_eq!(moved.name, "Alice A.");
        let same = db
            .users()
            .update(
                ACTOR,
                alice.id,
                &patch(json!({ "email": "ALICE@new.example" }))?,
            )
            .await?;
        assert_eq!(same.email, "alice@new.example");
        let listed = db
            .users()
            .list(
                &UserFilter {
                    email: Some("alice@new.example".into()),
                },
                Page::default(),
            )
            .await?;
        assert_eq!(listed.total, 1);
        assert_eq!(listed.items[0].id, alice.id);

        // Both fields at once; the other user is untouched.
        let both = db
            .users()
            .update(
                ACTOR,
                alice.id,
                &patch(json!({ "email": "a@example.org", "name": "A" }))?,
            )
            .await?;
        assert_eq!(
            (both.email.as_str(), both.name.as_str()),
            ("a@example.org", "A")
        );
        assert_eq!(db.users().get(bob.id).await?, bob);
        let entry = audit_latest(&db).await?;
        assert_eq!(entry.details["fields"], json!(["email", "name"]));
        assert_eq!(entry.details["email"], json!("a@example.org"));

        // Users are not tracked by the change log.
        assert_eq!(db.changes().current_cursor().await?, cursor);
        Ok(())
    }

    async fn users_update_conflicts_and_invalid_input(db: Database) -> anyhow::Result<()> {
        let alice = db.users().create(ACTOR, &user("alice@example.com")).await?;
        let bob = db.users().create(ACTOR, &user("bob@example.com")).await?;
        let audited = audit_total(&db).await?;

        // Bob's address, in any case, is taken.
        for email in ["bob@example.com", " BOB@Example.com"] {
            match db
                .users()
                .update(ACTOR, alice.id, &patch(json!({ "email": email }))?)
                .await
            {
                Err(DbError::Conflict { message, .. }) => {
                    ensure!(message.contains("bob@example.com"), "message {message:?}");
                }
                other => anyhow::bail!("expected Conflict for {email:?}, got {other:?}"),
            }
        }
        for email in [
            "",
            "not-an-email",
            "@example.com",
            "a b@example.com",
            "a@b@c",
        ] {
            match db
                .users()
                .update(ACTOR, alice.id, &patch(json!({ "email": email }))?)
                .await
            {
                Err(DbError::Invalid { .. }) => {}
                other => anyhow::bail!("expected Invalid for email {email:?}, got {other:?}"),
            }
        }
        let long_email = format!("{}@example.com", "a".repeat(limits::EMAIL));
        expect_err!(
            Invalid,
            db.users()
                .update(ACTOR, alice.id, &patch(json!({ "email": long_email }))?)
                .await
        );
        expect_err!(
            Invalid,
            db.users()
                .update(ACTOR, alice.id, &patch(json!({ "name": "" }))?)
                .await
        );
        let long_name = "n".repeat(limits::NAME + 1);
        expect_err!(
            Invalid,
            db.users()
                .update(ACTOR, alice.id, &patch(json!({ "name": long_name }))?)
                .await
        );
        // An invalid field fails the whole patch, even next to a valid one.
        expect_err!(
            Invalid,
            db.users()
                .update(
                    ACTOR,
                    alice.id,
                    &patch(json!({ "name": "Fine", "email": "nope" }))?
                )
                .await
        );

        // Unknown ids, with and without fields.
        let unknown = bob.id + 10_000;
        match db
            .users()
            .update(ACTOR, unknown, &patch(json!({ "name": "Ghost" }))?)
            .await
        {
            Err(DbError::NotFound { entity, id }) => {
                assert_eq!((entity, id), ("user", unknown.to_string()));
            }
            other => anyhow::bail!("expected NotFound, got {other:?}"),
        }
        expect_err!(
            NotFound,
            db.users().update(ACTOR, unknown, &patch(json!({}))?).await
        );

        // `null` and unknown fields never reach the repository.
        ensure!(patch(json!({ "name": null })).is_err());
        ensure!(patch(json!({ "email": null })).is_err());
        ensure!(patch(json!({ "id": 3 })).is_err());

        // Nothing failed half-way: both users as they were, no audit row written.
        assert_eq!(db.users().get(alice.id).await?, alice);
        assert_eq!(db.users().get(bob.id).await?, bob);
        assert_eq!(audit_total(&db).await?, audited);
        Ok(())
    }

    async fn users_delete_cascades_sessions_and_digests(db: Database) -> anyhow::Result<()> {
        let gone = db.users().create(ACTOR, &user("gone@example.com")).await?;
        let kept = db.users().create(ACTOR, &user("kept@example.com")).await?;
        let assistant = db.agents().create(ACTOR, &agent("assistant")).await?;
        let expires = now() + Duration::hours(1);
        let mut sessions = Vec::new();
        for owner in [gone.id, kept.id] {
            let session = db
                .sessions()
                .create(&NewSession {
                    user_id: owner,
                    agent_id: Some(assistant.id),
                    metadata: json!({}),
                    expires_at: expires,
                })
                .await?;
            sessions.push(session.id);
            db.digests().create(ACTOR, owner, &digest("weekly")).await?;
        }
        let cursor = db.changes().current_cursor().await?;

        db.users().delete(ACTOR, gone.id).await?;
        let entry = audit_latest(&db).await?;
        assert_eq!(entry.actor, ACTOR);
        assert_eq!(entry.action, "user.delete");
        assert_eq!(entry.entity_type, "user");
        assert_eq!(entry.entity_id, Some(gone.id.to_string()));
        assert_eq!(entry.details["email"], json!("gone@example.com"));

        expect_err!(NotFound, db.users().get(gone.id).await);
        expect_err!(
            NotFound,
            db.digests().recent(gone.id, Page::default()).await
        );
        expect_err!(NotFound, db.sessions().get_active(sessions[0]).await);
        // A second delete finds nothing and records nothing.
        let audited = audit_total(&db).await?;
        match db.users().delete(ACTOR, gone.id).await {
            Err(DbError::NotFound { entity, id }) => {
                assert_eq!((entity, id), ("user", gone.id.to_string()));
            }
            other => anyhow::bail!("expected NotFound, got {other:?}"),
        }
        expect_err!(NotFound, db.users().delete(ACTOR, kept.id + 10_000).await);
        assert_eq!(audit_total(&db).await?, audited);

        // The other user, their session and digest, and the agent stay.
        assert_eq!(db.users().get(kept.id).await?, kept);
        assert_eq!(
            db.sessions().get_active(sessions[1]).await?.user_id,
            kept.id
        );
        assert_eq!(
            db.digests().recent(kept.id, Page::default()).await?.total,
            1
        );
        assert_eq!(db.agents().get(assistant.id).await?.id, assistant.id);
        let all = db
            .users()
            .list(&UserFilter::default(), Page::default())
            .await?;
        assert_eq!(all.total, 1);

        // The address is free again.
        let again = db.users().create(ACTOR, &user("gone@example.com")).await?;
        ensure!(again.id != gone.id, "ids are not reused");
        assert_eq!(db.changes().current_cursor().await?, cursor);
        Ok(())
    }
}
