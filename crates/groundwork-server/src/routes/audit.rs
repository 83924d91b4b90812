//! `/api/v1/audit`: the audit log, newest first.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use groundwork_db::{AuditEntry, AuditFilter, Listing};
use serde::Deserialize;
use utoipa::IntoParams;

use super::page;
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;

/// Filters and paging of `GET /audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAudit {
    /// Page size, 1 to 500 (default 50).
    limit: Option<i64>,
    /// Rows to skip (default 0).
    offset: Option<i64>,
    /// Only entries by this actor (an API key name or `anonymous`).
    actor: Option<String>,
    /// Only entries with this action (`agent.create`, `tool.attach`, ...).
    action: Option<String>,
    /// Only entries about this entity type (`agent`, `tool`, `agent_tool`, ...).
    entity_type: Option<String>,
    /// Only entries at or after this instant (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only entries before this instant (RFC 3339).
    until: Option<DateTime<Utc>>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/audit", tag = "audit", params(ListAudit),
    responses(
        (status = 200, description = "One page of entries", body = Listing<AuditEntry>),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListAudit>,
) -> Result<Json<Listing<AuditEntry>>, ApiError> {
    let page = page(query.limit, query.offset)?;
    let filter = AuditFilter {
        actor: query.actor,
        action: query.action,
        entity_type: query.entity_type,
        since: query.since,
        until: query.until,
    };
    Ok(Json(state.db.audit().list(&filter, page).await?))
}
