//! The audit trail of requests: every request by a staff account or an API key that writes,
//! reads a member's data, or is refused leaves one `audit_log` row (storage `audit`) after its
//! handler answered: who (the actor the `Caller` or `Staff` extractor authenticated, or the
//! account a sign-in named), what (the method and the route's template, never the URL: query
//! strings carry tokens), the target (the route's last id parameter, kept only when the request
//! succeeded), the members it read or changed (the path's member, or those a handler names
//! through [`Audit`]), when, the client address and the status answered.
//!
//! A successful write's row is written before the response leaves, in a task the client cannot
//! cancel; reads and refusals wait in [`Pending`] for the next flush (once a second). Requests
//! nobody authenticated are not audited (failed sign-ins to unknown accounts have their own
//! backoff and log lines).

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::storage::AuditEntry;

/// Who made a request, as the audit records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditActor {
    /// `api_key` or `staff`.
    pub kind: &'static str,
    pub id: String,
    /// The key's name or the account's e-mail.
    pub label: String,
}

#[derive(Debug, Default)]
struct Noted {
    actor: Option<AuditActor>,
    members: Vec<String>,
    /// A POST that only reads (a barcode lookup, the designer's live checks).
    read_only: bool,
}

/// Filled by the request's extractors and handler, read by [`record`] once it answered.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<Noted>>);

impl AuditSlot {
    fn with<T>(&self, f: impl FnOnce(&mut Noted) -> T) -> T {
        // A handler that panicked while holding the lock cannot have left it half-written.
        let mut noted = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut noted)
    }
}

/// Names the request's actor (called by the authenticating extractors).
pub fn note_actor(parts: &Parts, actor: AuditActor) {
    if let Some(slot) = parts.extensions.get::<AuditSlot>() {
        slot.with(|n| n.actor = Some(actor));
    }
}

/// A handler's hold on its request's audit record (nothing when the middleware is absent).
pub struct Audit(Option<AuditSlot>);

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Audit, Self::Rejection> {
        Ok(Audit(parts.extensions.get::<AuditSlot>().cloned()))
    }
}

impl Audit {
    /// Names the actor, for a handler that authenticates by itself (sign-in).
    pub fn actor(&self, actor: AuditActor) {
        if let Some(slot) = &self.0 {
            slot.with(|n| n.actor = Some(actor));
        }
    }

    /// Marks a POST that changes nothing: it is recorded only when it read a member's data.
    pub fn read_only(&self) {
        if let Some(slot) = &self.0 {
            slot.with(|n| n.read_only = true);
        }
    }

    /// Names members the handler read or changed that its path does not name (a lookup, a
    /// list).
    pub fn members<'a>(&self, members: impl IntoIterator<Item = &'a str>) {
        if let Some(slot) = &self.0 {
            slot.with(|n| n.members.extend(members.into_iter().map(str::to_owned)));
        }
    }
}

/// The target of a route: its last `{…_id}` or `{id}` parameter, named after the parameter or,
/// for `{id}`, after the path segment before it (`/staff/templates/{id}` → `template`).
pub fn target(pattern: &str, path: &str) -> Option<(String, String)> {
    let mut found = None;
    let mut previous = "";
    for (name, raw) in pattern.split('/').zip(path.split('/')) {
        if let Some(param) = name.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            let kind = if let Some(kind) = param.strip_suffix("_id") {
                Some(kind.to_string())
            } else if param == "id" {
                let singular = previous.strip_suffix('s').unwrap_or(previous);
                Some(singular.replace('-', "_"))
            } else {
                None
            };
            if let Some(kind) = kind {
                let value = percent_encoding::percent_decode_str(raw)
                    .decode_utf8_lossy()
                    .into_owned();
                found = Some((kind, value));
            }
        }
        previous = name;
    }
    found
}

/// Audit rows that may wait for the next flush (once a second, `jobs::fetch_log_loop`, and at
/// shutdown): reads of member data and refused requests, which changed nothing. A crash loses
/// at most a second of them; a write that succeeded is never buffered.
#[derive(Debug, Default)]
pub struct Pending(Mutex<Vec<AuditEntry>>);

/// Rows buffered at most; past it a read is written at once instead.
const MAX_PENDING: usize = 10_000;

impl Pending {
    /// Writes the buffered rows in one transaction; on failure they are kept for the next try.
    pub async fn flush(&self, store: &crate::storage::Store) -> crate::storage::Result<usize> {
        let batch = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return Ok(0);
        }
        match store.append_audits(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                let mut pending = self.0.lock().unwrap_or_else(|p| p.into_inner());
                let newer = std::mem::replace(&mut *pending, batch);
                pending.extend(newer);
                Err(e)
            }
        }
    }

    /// Buffers `entry`, or hands it back when the buffer is full.
    fn push(&self, entry: AuditEntry) -> Option<AuditEntry> {
        let mut pending = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING {
            return Some(entry);
        }
        pending.push(entry);
        None
    }
}

/// Middleware (after routing): records the request once its handler answered.
///
/// A request that may write runs in a task of its own, so a client that disconnects, or the
/// request timeout, cannot stop it between its commit and its audit row: the handler finishes
/// and its row is written whatever happens to the connection.
pub async fn record(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let slot = AuditSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().clone();
    let pattern = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let client_ip = req
        .extensions()
        .get::<crate::proxy::ClientIp>()
        .map(|c| c.0.to_string());
    let reads = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let run = async move {
        let response = next.run(req).await;
        let noted = slot.with(std::mem::take);
        if let (Some(actor), Some(pattern)) = (noted.actor.clone(), pattern) {
            let status = response.status().as_u16();
            let entry = entry(actor, noted, &method, &pattern, &path, client_ip, status);
            if let Some(entry) = entry {
                write(&state, entry).await;
            }
        }
        response
    };
    if reads {
        // A read dropped before it answered disclosed nothing.
        return run.await;
    }
    match tokio::spawn(run).await {
        Ok(response) => response,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The audit row of an answered request, if it is one to keep: a write, a read of a member's
/// data, or a refusal (a probe for barcodes or ids shows as a run of 404s). Ids from the path are kept only when the request succeeded (the handler
/// found them): a refused or failed request's path may hold anything a client typed (an
/// e-mail address, a pasted key), and the log keeps what it holds for ever.
fn entry(
    actor: AuditActor,
    noted: Noted,
    method: &Method,
    pattern: &str,
    path: &str,
    client_ip: Option<String>,
    status: u16,
) -> Option<AuditEntry> {
    let succeeded = status < 400;
    let target = target(pattern, path).filter(|_| succeeded);
    let mut members = noted.members;
    if let Some((kind, id)) = &target
        && kind == "member"
    {
        members.push(id.clone());
    }
    let is_write =
        !noted.read_only && !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !is_write && members.is_empty() && succeeded {
        return None;
    }
    Some(AuditEntry {
        actor_kind: actor.kind.to_string(),
        actor_id: actor.id,
        actor_label: actor.label,
        action: format!("{method} {pattern}"),
        target_kind: target.as_ref().map(|t| t.0.clone()),
        target_id: target.map(|t| t.1),
        client_ip,
        status: status as i64,
        is_write,
        members,
        ..Default::default()
    })
}

/// Writes a successful write's row now; buffers reads and refusals for the next flush.
async fn write(state: &AppState, mut entry: AuditEntry) {
    if !entry.is_write || entry.status >= 400 {
        entry.at = crate::domain::now_ms();
        entry.id = crate::storage::new_audit_id();
        match state.audit.push(entry) {
            None => return,
            Some(full) => entry = full,
        }
    }
    if let Err(e) = state.store.append_audit(&entry).await {
        // The action happened; losing its record is an operator's alarm, not the client's error.
        tracing::error!(error = %e, action = %entry.action, "could not write the audit log");
        state.store.metrics().audit_failed();
    }
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn targets_come_from_the_last_id_parameter() {
        assert_eq!(
            target(
                "/api/v1/members/{member_id}/erase",
                "/api/v1/members/abc/erase"
            ),
            Some(("member".into(), "abc".into()))
        );
        assert_eq!(
            target(
                "/api/v1/templates/{template_id}/images/{kind}",
                "/api/v1/templates/t1/images/logo"
            ),
            Some(("template".into(), "t1".into()))
        );
        assert_eq!(
            target("/staff/publish-jobs/{id}", "/staff/publish-jobs/j%201"),
            Some(("publish_job".into(), "j 1".into()))
        );
        assert_eq!(
            target(
                "/scan/members/{id}/operations",
                "/scan/members/m9/operations"
            ),
            Some(("member".into(), "m9".into()))
        );
        assert_eq!(target("/api/v1/programs", "/api/v1/programs"), None);
    }
}

/// `GET /staff/audit` (admin): the audit log with the API's filters.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/staff/audit", axum::routing::get(page))
}

#[derive(serde::Deserialize)]
struct PageQuery {
    actor: Option<String>,
    target: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// `(at, id)` of the last entry shown, as `at:id`.
    before: Option<String>,
}

struct Row {
    when: String,
    actor_kind: String,
    actor_id: String,
    actor_label: String,
    action: String,
    target: Option<String>,
    members: String,
    client_ip: Option<String>,
    status: i64,
}

#[derive(askama::Template, askama_web::WebTemplate)]
#[template(path = "pages/audit.html")]
struct AuditPage {
    email: String,
    role: &'static str,
    csrf: String,
    actor: String,
    target: String,
    action: String,
    from: String,
    to: String,
    errors: Vec<String>,
    entries: Vec<Row>,
    next: Option<String>,
}

const PAGE: i64 = 100;

async fn page(
    State(state): State<AppState>,
    staff: crate::web::staff::Staff,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Response {
    use axum::response::IntoResponse;
    if let Err(r) = staff.require(&[crate::storage::Role::Admin]) {
        return r.into_response();
    }
    let user = &staff.session.user;
    let mut page = AuditPage {
        email: user.email.clone(),
        role: user.role.as_str(),
        csrf: staff.session.csrf_token.clone(),
        actor: q.actor.clone().unwrap_or_default(),
        target: q.target.clone().unwrap_or_default(),
        action: q.action.clone().unwrap_or_default(),
        from: q.from.clone().unwrap_or_default(),
        to: q.to.clone().unwrap_or_default(),
        errors: Vec::new(),
        entries: Vec::new(),
        next: None,
    };
    let filter = match crate::api::audit::filter(
        q.actor,
        q.target,
        q.action,
        q.from.as_deref(),
        q.to.as_deref(),
    ) {
        Ok(f) => f,
        Err(invalid) => {
            page.errors = invalid
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.message))
                .collect();
            return (axum::http::StatusCode::BAD_REQUEST, page).into_response();
        }
    };
    let before = q.before.as_deref().and_then(|b| {
        let (at, id) = b.split_once(':')?;
        Some((at.parse().ok()?, id.to_string()))
    });
    let mut found = match state.store.audit_page(&filter, before, PAGE + 1).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "reading the audit log failed");
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    if found.len() as i64 > PAGE {
        found.truncate(PAGE as usize);
        if let Some(last) = found.last() {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (k, v) in [
                ("actor", &page.actor),
                ("target", &page.target),
                ("action", &page.action),
                ("from", &page.from),
                ("to", &page.to),
            ] {
                if !v.is_empty() {
                    query.append_pair(k, v);
                }
            }
            query.append_pair("before", &format!("{}:{}", last.at, last.id));
            page.next = Some(format!("/staff/audit?{}", query.finish()));
        }
    }
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    page.entries = found
        .into_iter()
        .map(|e| Row {
            when: time::OffsetDateTime::from_unix_timestamp_nanos(e.at as i128 * 1_000_000)
                .ok()
                .and_then(|t| t.format(format).ok())
                .unwrap_or_else(|| e.at.to_string()),
            actor_kind: e.actor_kind,
            actor_id: e.actor_id,
            actor_label: e.actor_label,
            action: e.action,
            target: e.target_id.map(|id| match e.target_kind {
                Some(kind) => format!("{kind} {id}"),
                None => id,
            }),
            members: e.members.join(", "),
            client_ip: e.client_ip,
            status: e.status,
        })
        .collect();
    page.into_response()
}
