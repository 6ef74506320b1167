//! The audit log over the API (admin keys only): who did what to which target, newest first.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ApiQuery};
use super::views::{ErrorBody, Paged};
use super::{Page, paged};
use crate::app::AppState;
use crate::domain::{Checker, Invalid, now_ms, parse_instant};
use crate::storage::{AuditEntry, AuditFilter, Role};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this actor: an API key's id or a staff account's id.
    #[param(max_length = 512)]
    actor: Option<String>,
    /// Only requests on this target id, or that read or changed this member.
    #[param(max_length = 512)]
    target: Option<String>,
    /// Only actions containing this text (`erase`, `POST /api/v1/api-keys`).
    #[param(max_length = 512)]
    action: Option<String>,
    /// From this instant on: milliseconds since the epoch, RFC 3339, or a span back from now
    /// (`24h`, `7d`).
    #[param(max_length = 64)]
    from: Option<String>,
    /// Before this instant (same forms as `from`).
    #[param(max_length = 64)]
    to: Option<String>,
    /// Items per page, 1 to 100 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 512)]
    cursor: Option<String>,
}

/// Who made the request.
#[derive(Serialize, ToSchema)]
pub struct AuditActorView {
    /// `api_key`, `staff` or `cli`.
    pub kind: String,
    pub id: String,
    /// The key's name, the staff account's e-mail, the OS user.
    pub label: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: String,
    /// Milliseconds since the epoch.
    pub at: i64,
    pub actor: AuditActorView,
    /// The method and the route's template, or the CLI verb.
    pub action: String,
    /// `member`, `program`, `template`, `key`, …
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub client_ip: Option<String>,
    /// The HTTP status answered (for a CLI command: 0 failed, 1 done).
    pub status: i64,
    /// False for a request that only read (a member's data).
    pub write: bool,
    /// The members the request read or changed.
    pub members: Vec<String>,
}

impl From<&AuditEntry> for AuditEntryView {
    fn from(e: &AuditEntry) -> AuditEntryView {
        AuditEntryView {
            id: e.id.clone(),
            at: e.at,
            actor: AuditActorView {
                kind: e.actor_kind.clone(),
                id: e.actor_id.clone(),
                label: e.actor_label.clone(),
            },
            action: e.action.clone(),
            target_kind: e.target_kind.clone(),
            target_id: e.target_id.clone(),
            client_ip: e.client_ip.clone(),
            status: e.status,
            write: e.is_write,
            members: e.members.clone(),
        }
    }
}

/// The filter of a query; `Invalid` names each unreadable time.
pub fn filter(
    actor: Option<String>,
    target: Option<String>,
    action: Option<String>,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<AuditFilter, Invalid> {
    let mut checks = Checker::default();
    let now = now_ms();
    let mut instant = |field: &str, text: Option<&str>| match text.filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => parse_instant(t, now)
            .map_err(|m| checks.fail(field, m))
            .ok(),
    };
    let from_ms = instant("from", from);
    let to_ms = instant("to", to);
    checks.finish()?;
    let some = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
    Ok(AuditFilter {
        actor_id: some(actor),
        target_id: some(target),
        action: some(action),
        from_ms,
        to_ms,
    })
}

/// Read the audit log, newest first: every write by a staff account or an API key, and every
/// read of a member's data, with its actor, target, client address and outcome.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "OK", body = Paged<AuditEntryView>), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody)))]
pub async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Paged<AuditEntryView>>, ApiError> {
    caller.require(&[Role::Admin])?;
    let f = filter(
        q.actor,
        q.target,
        q.action,
        q.from.as_deref(),
        q.to.as_deref(),
    )?;
    let (before, limit) = Page {
        limit: q.limit,
        cursor: q.cursor,
    }
    .parse()?;
    let entries = state.store.audit_page(&f, before, limit + 1).await?;
    Ok(Json(paged(
        entries,
        limit,
        |e| (e.at, e.id.clone()),
        |e| AuditEntryView::from(e),
    )))
}
