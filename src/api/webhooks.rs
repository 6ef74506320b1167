//! Webhook endpoints over the API: create (the signing secret is shown once), list, get,
//! delete, enable again; per endpoint the delivery log, a test ping, redelivery of one event
//! and a replay from a point in time. Deliveries themselves are `crate::webhooks`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiQuery};
use super::events::{EventType, parse_types};
use super::views::{ErrorBody, Paged};
use super::{Page, paged};
use crate::app::AppState;
use crate::domain::{now_ms, parse_instant};
use crate::storage::Role;
use crate::storage::webhooks::{Delivery, Webhook};

/// Who manages webhooks.
const MANAGERS: &[Role] = &[Role::Admin, Role::Integration];

/// Endpoints at most.
const MAX_WEBHOOKS: usize = 50;

/// Events a replay queues at most.
const MAX_REPLAY: i64 = 10_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to `POST` events: any `http` or `https` URL.
    #[schema(max_length = 2000)]
    url: String,
    /// The event types it wants; all when absent or empty.
    #[serde(default)]
    events: Vec<EventType>,
    #[serde(default)]
    #[schema(max_length = 200)]
    description: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub description: String,
    /// The event types it receives; empty means all.
    #[schema(value_type = Vec<EventType>)]
    pub events: Vec<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Since when every delivery failed (ms); null while it works.
    pub failing_since: Option<i64>,
    /// Set when it was disabled for failing `events.disable_after_hours`; nothing is
    /// delivered until `POST …/enable`.
    pub disabled_at: Option<i64>,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> WebhookView {
        WebhookView {
            id: w.id.clone(),
            url: w.url.clone(),
            description: w.description.clone(),
            events: w.types.clone(),
            created_at: w.created_at,
            failing_since: w.failing_since,
            disabled_at: w.disabled_at,
        }
    }
}

/// A new endpoint and its signing secret, shown this once.
#[derive(Serialize, ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// Verify each delivery's `Tessera-Signature: t=<unix seconds>,v1=<hex>`: the hex
    /// HMAC-SHA256 of `"<t>.<body>"` with this secret; refuse a `t` older than 5 minutes.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

/// One delivery of one event to the endpoint.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    pub event_id: String,
    /// `pending`, `delivered` or `failed` (given up after `events.retry_hours`).
    pub status: String,
    pub attempts: i64,
    /// The last answer's HTTP status; null when there was none (timeout, refused).
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    /// The last attempt's duration.
    pub latency_ms: Option<i64>,
    pub created_at: i64,
    pub last_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    /// When the next attempt is due; null once delivered or given up.
    pub next_attempt_at: Option<i64>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> DeliveryView {
        DeliveryView {
            id: d.id.clone(),
            event_id: d.event_id.clone(),
            status: d.status.clone(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            latency_ms: d.latency_ms,
            created_at: d.created_at,
            last_attempt_at: d.last_attempt_at,
            delivered_at: d.delivered_at,
            next_attempt_at: d.next_at,
        }
    }
}

/// What a test ping got.
#[derive(Serialize, ToSchema)]
pub struct PingResult {
    /// True for a 2xx answer.
    pub ok: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    /// The event to send again (an event's `id`).
    #[schema(max_length = 64)]
    event_id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Send again every kept event the endpoint wants from this instant on: milliseconds
    /// since the epoch, RFC 3339, or a span back from now (`24h`, `7d`).
    #[schema(max_length = 64)]
    from: String,
}

#[derive(Serialize, ToSchema)]
pub struct Queued {
    /// Deliveries queued, due now.
    pub queued: u64,
}

/// Register a webhook endpoint. The response carries its signing secret, this once; it is
/// stored sealed by the server's key ring.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "events", request_body = CreateWebhook,
    responses((status = 201, description = "Created", body = WebhookCreated), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 409, description = "At most 50 endpoints", body = ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<WebhookCreated>), ApiError> {
    caller.require(MANAGERS)?;
    crate::webhooks::check_url(&body.url).map_err(ApiError::bad_request)?;
    if body.description.len() > 200 {
        return Err(ApiError::bad_request(
            "description must be at most 200 characters",
        ));
    }
    let names: Vec<String> = body
        .events
        .iter()
        .map(|e| {
            serde_json::to_value(e)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        })
        .collect();
    let types = parse_types(Some(&names.join(",")))?;
    if state.store.list_webhooks().await?.len() >= MAX_WEBHOOKS {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_webhooks",
            format!("at most {MAX_WEBHOOKS} webhook endpoints; delete one first"),
        ));
    }
    let hook = Webhook {
        id: uuid::Uuid::now_v7().to_string(),
        url: body.url,
        description: body.description,
        types,
        created_at: now_ms(),
        failing_since: None,
        disabled_at: None,
    };
    let secret = crate::webhooks::new_secret();
    state.store.insert_webhook(&hook, &secret).await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookCreated {
            webhook: WebhookView::from(&hook),
            secret,
        }),
    ))
}

/// List webhook endpoints (never their secrets).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "events",
    responses((status = 200, description = "OK", body = WebhookList), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookList>, ApiError> {
    caller.require(MANAGERS)?;
    let hooks = state.store.list_webhooks().await?;
    Ok(Json(WebhookList {
        items: hooks.iter().map(WebhookView::from).collect(),
    }))
}

/// Get a webhook endpoint: its health (`failing_since`, `disabled_at`).
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook_id}", tag = "events",
    params(("webhook_id" = String, Path)),
    responses((status = 200, description = "OK", body = WebhookView), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(MANAGERS)?;
    Ok(Json(WebhookView::from(
        &state.store.get_webhook(&webhook_id).await?,
    )))
}

/// Delete a webhook endpoint and its delivery log; nothing more is sent to it.
#[utoipa::path(delete, path = "/api/v1/webhooks/{webhook_id}", tag = "events",
    params(("webhook_id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(MANAGERS)?;
    if state.store.delete_webhook(&webhook_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook"))
    }
}

/// Turn a disabled endpoint back on: deliveries still pending resume.
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook_id}/enable", tag = "events",
    params(("webhook_id" = String, Path)),
    responses((status = 200, description = "OK", body = WebhookView), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn enable_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    caller.require(MANAGERS)?;
    if !state.store.enable_webhook(&webhook_id).await? {
        return Err(ApiError::not_found("webhook"));
    }
    Ok(Json(WebhookView::from(
        &state.store.get_webhook(&webhook_id).await?,
    )))
}

/// The endpoint's delivery log, newest first: status, attempts, latency.
#[utoipa::path(get, path = "/api/v1/webhooks/{webhook_id}/deliveries", tag = "events",
    params(("webhook_id" = String, Path), Page),
    responses((status = 200, description = "OK", body = Paged<DeliveryView>), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Paged<DeliveryView>>, ApiError> {
    caller.require(MANAGERS)?;
    state.store.get_webhook(&webhook_id).await?;
    let (before, limit) = page.parse()?;
    let rows = state
        .store
        .webhook_deliveries(&webhook_id, before, limit + 1)
        .await?;
    Ok(Json(paged(
        rows,
        limit,
        |d| (d.created_at, d.id.clone()),
        |d| DeliveryView::from(d),
    )))
}

/// Send a signed `ping` event to the endpoint now and report its answer (not logged as a
/// delivery).
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook_id}/ping", tag = "events",
    params(("webhook_id" = String, Path)),
    responses((status = 200, description = "OK", body = PingResult), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn ping_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
) -> Result<Json<PingResult>, ApiError> {
    caller.require(MANAGERS)?;
    let deliverer = crate::webhooks::Deliverer::new(state.store.clone(), &state.config.events)
        .map_err(|e| {
            tracing::error!(error = %e, "building the webhook client");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error; see the server log",
            )
        })?;
    let sent = deliverer.ping(&webhook_id).await?;
    Ok(Json(PingResult {
        ok: sent.ok(),
        status: sent.status,
        error: sent.error,
        latency_ms: sent.latency_ms,
    }))
}

/// Send one event to the endpoint again (with the same event id), due now.
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook_id}/redeliver", tag = "events",
    params(("webhook_id" = String, Path)), request_body = Redeliver,
    responses((status = 202, description = "Queued", body = Queued), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
    ApiJson(body): ApiJson<Redeliver>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    caller.require(MANAGERS)?;
    state.store.get_webhook(&webhook_id).await?;
    let event = state.store.get_event(&body.event_id).await?;
    let queued = state
        .store
        .redeliver(&webhook_id, &[event.id], now_ms())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued })))
}

/// Send again every kept event the endpoint wants from a point in time on (at most 10000).
#[utoipa::path(post, path = "/api/v1/webhooks/{webhook_id}/replay", tag = "events",
    params(("webhook_id" = String, Path)), request_body = Replay,
    responses((status = 202, description = "Queued", body = Queued), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(webhook_id): Path<String>,
    ApiJson(body): ApiJson<Replay>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    caller.require(MANAGERS)?;
    let hook = state.store.get_webhook(&webhook_id).await?;
    let now = now_ms();
    let from =
        parse_instant(&body.from, now).map_err(|m| ApiError::bad_request(format!("from: {m}")))?;
    let events = state.store.events_since(from, MAX_REPLAY + 1).await?;
    if events.len() as i64 > MAX_REPLAY {
        return Err(ApiError::bad_request(format!(
            "a replay sends at most {MAX_REPLAY} events; choose a later from"
        )));
    }
    let ids: Vec<String> = events
        .into_iter()
        .filter(|e| hook.types.is_empty() || hook.types.contains(&e.kind))
        .map(|e| e.id)
        .collect();
    let queued = state.store.redeliver(&webhook_id, &ids, now).await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued })))
}
