//! Holds for checkout ("pay with points"): `POST /api/v1/members/{id}/holds` reserves points,
//! `POST /api/v1/holds/{id}/capture` redeems up to them, `POST /api/v1/holds/{id}/void` releases
//! them; an open hold past its expiry is released by the ledger job. A hold resolves once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use super::transactions::idempotency_key;
use super::views::{CaptureView, ErrorBody, HoldView, TransactionView};
use crate::app::AppState;
use crate::domain::{Checker, now_ms};
use crate::ledger::{MAX_HOLD_SECONDS, MAX_POINTS, grouped};
use crate::service::points;
use crate::storage::{Actor, NewHold, Role};

/// Who may hold and capture: whoever may redeem.
const SPENDERS: &[Role] = &[Role::Admin, Role::Integration, Role::Cashier];

/// The hold's life when the request names none: ten minutes, a checkout's length.
const DEFAULT_HOLD_SECONDS: i64 = 600;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// Points to reserve, 1 to 1,000,000,000, at most the member's available points.
    pub points: i64,
    /// Seconds until the hold is released unless captured: 1 to 604,800 (a week); 600 if absent.
    pub expires_in_seconds: Option<i64>,
    /// The checkout's reference (order or basket id), carried onto the redemption.
    #[schema(max_length = 200)]
    pub external_ref: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureRequest {
    /// Points to redeem, 1 to the points held; all of them if absent. The rest is released.
    pub points: Option<i64>,
}

/// Reserve points for a checkout. The available balance drops by `points`; the balance stays
/// until the hold is captured. Requires an `Idempotency-Key`: a retry returns the first hold.
#[utoipa::path(post, path = "/api/v1/members/{member_id}/holds", tag = "transactions",
    params(
        ("member_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "1 to 255 characters, unique per request of this API key"),
    ),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "Created", body = HoldView),
        (status = 400, description = "invalid fields, or no Idempotency-Key", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 403, description = "The key's role may not do this", body = ErrorBody),
        (status = 404, description = "unknown member", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "not enough available points (`details.available`)", body = ErrorBody),
    ))]
pub async fn create_hold(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    Path(member_id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<HoldRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut c = Checker::default();
    if !(1..=MAX_POINTS).contains(&req.points) {
        c.fail(
            "points",
            format!(
                "points must be between 1 and {}, got {}",
                grouped(MAX_POINTS),
                req.points
            ),
        );
    }
    let seconds = req.expires_in_seconds.unwrap_or(DEFAULT_HOLD_SECONDS);
    if !(1..=MAX_HOLD_SECONDS).contains(&seconds) {
        c.fail(
            "expires_in_seconds",
            format!(
                "expires_in_seconds must be between 1 and {} (a week), got {seconds}",
                grouped(MAX_HOLD_SECONDS)
            ),
        );
    }
    if let Some(r) = &req.external_ref {
        crate::domain::check_text(&mut c, "external_ref", r, 200);
    }
    c.finish()?;
    caller.require(SPENDERS)?;
    audit.members([member_id.as_str()]);
    let canonical = json!({"hold_for": member_id, "request": req});
    let idempotency = points::idempotency(&caller.key_id, key, &canonical);
    let by = Actor {
        id: Some(&caller.key_id),
        limits: caller.limits,
    };
    let now = now_ms();
    let new = NewHold {
        points: req.points,
        expires_at: now + seconds * 1000,
        external_ref: req.external_ref.as_deref(),
    };
    let (hold, replayed) = state
        .store
        .create_hold(&member_id, &new, by, Some(&idempotency), now)
        .await?;
    Ok(replay_marked(
        (StatusCode::CREATED, Json(HoldView::from(&hold))).into_response(),
        replayed,
    ))
}

/// A hold.
#[utoipa::path(get, path = "/api/v1/holds/{hold_id}", tag = "transactions",
    params(("hold_id" = String, Path)),
    responses((status = 200, description = "OK", body = HoldView), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn get_hold(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    Path(hold_id): Path<String>,
) -> Result<Json<HoldView>, ApiError> {
    caller.require(&[
        Role::Admin,
        Role::Integration,
        Role::Cashier,
        Role::Marketer,
    ])?;
    let hold = state.store.get_hold(&hold_id).await?;
    audit.members([hold.member_id.as_str()]);
    Ok(Json(HoldView::from(&hold)))
}

/// Capture a hold: redeem up to the held points (oldest points first) and release the rest, in
/// one transaction, within the key's redemption limits. A hold already captured, voided or
/// expired is a 409. Requires an `Idempotency-Key`: a retry returns the first capture.
#[utoipa::path(post, path = "/api/v1/holds/{hold_id}/capture", tag = "transactions",
    params(
        ("hold_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "1 to 255 characters, unique per request of this API key"),
    ),
    request_body = CaptureRequest,
    responses(
        (status = 200, description = "Captured", body = CaptureView),
        (status = 400, description = "invalid fields, or no Idempotency-Key", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 403, description = "the key's role may not do this, or a cashier limit", body = ErrorBody),
        (status = 404, description = "unknown hold", body = ErrorBody),
        (status = 409, description = "the hold is already captured, voided or expired; or the Idempotency-Key was used for another request", body = ErrorBody),
        (status = 422, description = "more points than the hold holds", body = ErrorBody),
    ))]
pub async fn capture_hold(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    Path(hold_id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CaptureRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    if let Some(p) = req.points
        && !(1..=MAX_POINTS).contains(&p)
    {
        let mut c = Checker::default();
        c.fail(
            "points",
            format!(
                "points must be between 1 and {}, got {p}",
                grouped(MAX_POINTS)
            ),
        );
        c.finish()?;
    }
    caller.require(SPENDERS)?;
    let canonical = json!({"capture": hold_id, "request": req});
    let idempotency = points::idempotency(&caller.key_id, key, &canonical);
    let by = Actor {
        id: Some(&caller.key_id),
        limits: caller.limits,
    };
    let (captured, replayed) = state
        .store
        .capture_hold(&hold_id, req.points, by, Some(&idempotency), now_ms())
        .await?;
    audit.members([captured.hold.member_id.as_str()]);
    let view = CaptureView {
        hold: HoldView::from(&captured.hold),
        transaction: TransactionView::from(&captured.outcome),
    };
    Ok(replay_marked(Json(view).into_response(), replayed))
}

/// Void a hold: release its points. Voiding a voided hold answers it again; a captured or
/// expired hold is a 409.
#[utoipa::path(post, path = "/api/v1/holds/{hold_id}/void", tag = "transactions",
    params(("hold_id" = String, Path)),
    responses(
        (status = 200, description = "Voided", body = HoldView),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 403, description = "The key's role may not do this", body = ErrorBody),
        (status = 404, description = "unknown hold", body = ErrorBody),
        (status = 409, description = "the hold is already captured or expired", body = ErrorBody),
    ))]
pub async fn void_hold(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    Path(hold_id): Path<String>,
) -> Result<Json<HoldView>, ApiError> {
    caller.require(SPENDERS)?;
    let hold = state.store.void_hold(&hold_id, now_ms()).await?;
    audit.members([hold.member_id.as_str()]);
    Ok(Json(HoldView::from(&hold)))
}

fn replay_marked(mut response: Response, replayed: bool) -> Response {
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
