//! Messages to Google Wallet cards (`addMessage`): to one member's card or to every card of a
//! template. Queued, then sent by the Google sync worker within Google's notification budget.
//! And each program's notification policy: which card changes notify the holder.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use super::transactions::idempotency_key;
use super::views::{ErrorBody, MessagesQueued};
use crate::app::AppState;
use crate::domain::google_notify::NotifyPolicy;
use crate::domain::now_ms;
use crate::storage::Role;

const SENDERS: &[Role] = &[Role::Admin, Role::Marketer];

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageRequest {
    /// At most 35 characters are shown as the title.
    pub header: String,
    /// At most 500 characters.
    pub body: String,
}

impl MessageRequest {
    fn validate(&self) -> Result<(), ApiError> {
        let h = self.header.trim().chars().count();
        let b = self.body.trim().chars().count();
        if !(1..=35).contains(&h) {
            return Err(ApiError::bad_request("header must have 1 to 35 characters"));
        }
        if !(1..=500).contains(&b) {
            return Err(ApiError::bad_request("body must have 1 to 500 characters"));
        }
        Ok(())
    }
}

/// The message id Google gets: the same for a retried request (same key, same target), so a
/// retry never queues a message twice.
fn message_id(caller: &Caller, key: &str, target: &str) -> String {
    let digest = Sha256::digest(format!("{}\n{key}\n{target}", caller.key_id).as_bytes());
    format!("m{}", &data_encoding::HEXLOWER.encode(&digest)[..24])
}

fn require_google(state: &AppState) -> Result<(), ApiError> {
    match state.google {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "google_not_configured",
            "Google Wallet is not configured: set google.issuer_id and google.service_account_key",
        )),
    }
}

/// Send a message to one member's Google Wallet card. It notifies the holder while the card's
/// budget (3 notifications per 24 hours) lasts, and is added silently after.
#[utoipa::path(post, path = "/api/v1/members/{member_id}/google/messages", tag = "members",
    params(("member_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "1 to 255 characters; a retry with the same key queues nothing again")),
    request_body = MessageRequest,
    responses((status = 202, description = "Queued", body = MessagesQueued), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found, or Google Wallet is not configured", body = ErrorBody)))]
pub async fn message_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<MessageRequest>,
) -> Result<(StatusCode, Json<MessagesQueued>), ApiError> {
    queue(&state, &caller, &headers, &req, Target::Member(&member_id)).await
}

/// Send a message to every Google Wallet card of a template, as a background job.
#[utoipa::path(post, path = "/api/v1/templates/{template_id}/google/messages", tag = "templates",
    params(("template_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "1 to 255 characters; a retry with the same key queues nothing again")),
    request_body = MessageRequest,
    responses((status = 202, description = "Queued", body = MessagesQueued), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found, or Google Wallet is not configured", body = ErrorBody)))]
pub async fn message_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(template_id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<MessageRequest>,
) -> Result<(StatusCode, Json<MessagesQueued>), ApiError> {
    queue(
        &state,
        &caller,
        &headers,
        &req,
        Target::Template(&template_id),
    )
    .await
}

enum Target<'a> {
    Member(&'a str),
    Template(&'a str),
}

/// Checks the request and queues the message for its target's cards (202).
async fn queue(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    req: &MessageRequest,
    target: Target<'_>,
) -> Result<(StatusCode, Json<MessagesQueued>), ApiError> {
    caller.require(SENDERS)?;
    let key = idempotency_key(headers)?;
    let scope = match target {
        Target::Member(id) => {
            state.store.get_member(id).await?;
            format!("member:{id}")
        }
        Target::Template(id) => {
            state.store.get_template(id).await?;
            format!("template:{id}")
        }
    };
    require_google(state)?;
    req.validate()?;
    let id = message_id(caller, key, &scope);
    let (header, body, now) = (req.header.trim(), req.body.trim(), now_ms());
    let queued = match target {
        Target::Member(member) => {
            state
                .store
                .queue_google_message(&id, member, header, body, now)
                .await? as u64
        }
        Target::Template(template) => {
            state
                .store
                .queue_google_message_for_template(&id, template, header, body, now)
                .await?
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(MessagesQueued {
            message_id: id,
            queued,
        }),
    ))
}

/// Which changes to a program's Google Wallet cards notify the holder (within Google's budget
/// of 3 notifications per card per 24 hours); the others update the card silently. Without a
/// policy set, every balance change notifies.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyPolicyBody {
    /// A redemption notifies.
    pub on_redemption: bool,
    /// A tier change notifies.
    pub on_tier_change: bool,
    /// A balance change of at least this many points notifies; 0 for none by size alone.
    #[schema(minimum = 0)]
    pub min_points: i64,
}

impl From<NotifyPolicy> for NotifyPolicyBody {
    fn from(p: NotifyPolicy) -> Self {
        NotifyPolicyBody {
            on_redemption: p.on_redemption,
            on_tier_change: p.on_tier_change,
            min_points: p.min_points,
        }
    }
}

/// A program's Google Wallet notification policy.
#[utoipa::path(get, path = "/api/v1/programs/{program_id}/google/notifications", tag = "programs",
    params(("program_id" = String, Path)),
    responses((status = 200, description = "OK", body = NotifyPolicyBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn get_notify_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
) -> Result<Json<NotifyPolicyBody>, ApiError> {
    caller.require(SENDERS)?;
    state.store.get_program(&program_id).await?;
    let policy = state.store.google_notify_policy(&program_id).await?;
    Ok(Json(policy.into()))
}

/// Set which changes to a program's Google Wallet cards notify the holder.
#[utoipa::path(put, path = "/api/v1/programs/{program_id}/google/notifications", tag = "programs",
    params(("program_id" = String, Path)), request_body = NotifyPolicyBody,
    responses((status = 200, description = "OK", body = NotifyPolicyBody), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn put_notify_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    ApiJson(body): ApiJson<NotifyPolicyBody>,
) -> Result<Json<NotifyPolicyBody>, ApiError> {
    caller.require(SENDERS)?;
    state.store.get_program(&program_id).await?;
    let policy = NotifyPolicy {
        on_redemption: body.on_redemption,
        on_tier_change: body.on_tier_change,
        min_points: body.min_points,
    };
    if let Some(problem) = policy.problems().first() {
        return Err(ApiError::bad_request(*problem));
    }
    state
        .store
        .set_google_notify_policy(&program_id, &policy, now_ms())
        .await?;
    Ok(Json(policy.into()))
}
