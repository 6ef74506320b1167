//! The cashier page (`/scan`): staff with the cashier or admin role scan a card's barcode (the
//! camera through the browser's `BarcodeDetector` where there is one; typing the code always
//! works), see the member, and record a purchase or a redemption.
//!
//! Every operation carries an idempotency key the page makes once per operation, so a double
//! tap or a retry after a dropped connection posts once. Cashier limits (points per operation,
//! per UTC day) are enforced by the ledger inside the posting's transaction, and refused here
//! with a message that says which and why. Lookups are throttled per staff account.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::domain::{Member, now_ms};
use crate::ledger::{MAX_AMOUNT, MAX_POINTS, Operation, Origin, PointLimits};
use crate::service::points;
use crate::storage::{Actor, Role, StorageError};
use crate::web::staff::Staff;

const CASHIERS: &[Role] = &[Role::Cashier, Role::Admin];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/scan", get(page))
        .route("/scan/lookup", post(lookup))
        .route("/scan/members/{id}/operations", post(operate))
        .route("/scan/members/{id}/holds", post(hold))
        .route("/scan/holds/{id}/capture", post(capture))
        .route("/scan/holds/{id}/void", post(void))
        .route("/scan/assets/scan.js", get(script))
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/scan.html")]
struct ScanPage {
    csrf: String,
    email: String,
    role: &'static str,
    per_operation: Option<i64>,
    per_day: Option<i64>,
}

async fn page(staff: Staff) -> Response {
    if let Err(r) = staff.require(CASHIERS) {
        return r.into_response();
    }
    let u = &staff.session.user;
    ScanPage {
        csrf: staff.session.csrf_token.clone(),
        email: u.email.clone(),
        role: u.role.as_str(),
        per_operation: u.max_points_per_operation,
        per_day: u.max_points_per_day,
    }
    .into_response()
}

async fn script() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../templates/assets/scan.js"),
    )
        .into_response()
}

/// A refusal for the page's script: `{"error": message}` with its status.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    Refused(status, message.into()).into_response()
}

fn failed(e: impl std::fmt::Display) -> Refused {
    tracing::error!(error = %e, "the scan page failed");
    Refused(
        StatusCode::INTERNAL_SERVER_ERROR,
        "something went wrong; try again".into(),
    )
}

fn internal(e: impl std::fmt::Display) -> Response {
    failed(e).into_response()
}

/// The signed-in cashier, with the CSRF token of the request checked.
fn cashier(staff: &Staff, csrf: &str) -> Result<(), Refused> {
    let forbidden = |m: &str| Refused(StatusCode::FORBIDDEN, m.into());
    staff
        .require(CASHIERS)
        .map_err(|_| forbidden("only cashiers and admins may use the scan page"))?;
    staff
        .check_csrf(csrf)
        .map_err(|_| forbidden("this page expired; reload it and try again"))
}

/// What the cashier sees of a member.
async fn member_json(state: &AppState, m: &Member) -> Result<serde_json::Value, StorageError> {
    let program = state.store.get_program(&m.program_id).await?;
    let standing = state
        .store
        .member_standing(&m.id, &program.rules, now_ms())
        .await?;
    Ok(json!({
        "id": m.id,
        "name": m.display_name,
        "program": program.name,
        "points": m.points,
        "available": m.points - standing.held,
        "tier": program.rules.tier_name(m.tier.as_deref()),
        "next_expiry": standing.next_expiry.map(|(at, points)| json!({
            "date": crate::domain::template::w3c_date(at).get(..10).unwrap_or_default().to_string(),
            "points": points,
        })),
    }))
}

#[derive(Deserialize)]
struct Lookup {
    csrf: String,
    barcode: String,
}

async fn lookup(
    State(state): State<AppState>,
    staff: Staff,
    audit: crate::web::audit::Audit,
    Json(q): Json<Lookup>,
) -> Response {
    audit.read_only();
    if let Err(r) = cashier(&staff, &q.csrf) {
        return r.into_response();
    }
    if let Err(wait) = state
        .lookup_throttle
        .check(&format!("lookup:staff:{}", staff.session.user.id))
        .await
    {
        tracing::warn!(staff = %staff.session.user.id, "barcode lookups throttled");
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many lookups in a minute; wait {} s and try again",
                wait.as_secs().max(1)
            ),
        );
    }
    let code = q.barcode.trim();
    if code.is_empty() || code.len() > 128 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "enter the code under the card's barcode",
        );
    }
    match state.store.find_member_by_barcode(code).await {
        Ok(Some(m)) => match member_json(&state, &m).await {
            Ok(v) => {
                audit.members([m.id.as_str()]);
                Json(json!({ "member": v })).into_response()
            }
            Err(e) => internal(e),
        },
        Ok(None) => refuse(
            StatusCode::NOT_FOUND,
            "no card with this code; check it and try again",
        ),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Purchase,
    Redeem,
}

#[derive(Deserialize)]
struct OperationRequest {
    csrf: String,
    kind: Kind,
    /// A purchase, in minor units (cents).
    amount_minor: Option<i64>,
    /// A redemption, in points.
    points: Option<i64>,
    /// Made by the page once per operation; a retry sends the same.
    key: String,
}

async fn operate(
    State(state): State<AppState>,
    staff: Staff,
    Path(member_id): Path<String>,
    Json(req): Json<OperationRequest>,
) -> Response {
    if let Err(r) = cashier(&staff, &req.csrf) {
        return r.into_response();
    }
    let key = match operation_key(&req.key) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let in_range = |v: Option<i64>, max: i64| v.filter(|n| (1..=max).contains(n));
    let op = match (
        &req.kind,
        in_range(req.amount_minor, MAX_AMOUNT),
        in_range(req.points, MAX_POINTS),
    ) {
        (Kind::Purchase, Some(amount_minor), _) => Operation::EarnPurchase { amount_minor },
        (Kind::Redeem, _, Some(points)) => Operation::Redeem { points },
        (Kind::Purchase, None, _) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "enter the purchase amount, more than 0",
            );
        }
        (Kind::Redeem, _, None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "enter the points to redeem, more than 0",
            );
        }
    };
    let user = &staff.session.user;
    let (actor, limits) = staff_actor(&staff);
    let canonical = json!({
        "member_id": member_id, "kind": req.kind, "amount_minor": req.amount_minor, "points": req.points,
    });
    let idempotency = points::idempotency(&actor, key, &canonical);
    let origin = Origin {
        channel: Some("scan".into()),
        ..Origin::default()
    };
    // The ledger replays a retry of an operation that went through before it checks the
    // limits, and checks them in the posting's own transaction.
    let by = Actor {
        id: Some(&actor),
        limits,
    };
    match points::post(
        &state.store,
        &member_id,
        &op,
        &origin,
        by,
        Some(&idempotency),
    )
    .await
    {
        Ok((outcome, replayed)) => {
            tracing::info!(member = %member_id, staff = %user.id, points = outcome.entry.points, replayed, "cashier operation");
            (
                if replayed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                Json(json!({
                    "entry_id": outcome.entry.id,
                    "points": outcome.entry.points,
                    "balance": outcome.balance,
                    "available": outcome.balance - state.store.held_points(&member_id).await.unwrap_or(0),
                    "tier": outcome.tier,
                    "replayed": replayed,
                })),
            )
                .into_response()
        }
        Err(e) => refusal(e),
    }
}

/// The cashier's key for a page operation: 8 to 255 characters, made once per operation.
fn operation_key(key: &str) -> Result<&str, Refused> {
    let key = key.trim();
    if !(8..=255).contains(&key.len()) {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "the operation key must have 8 to 255 characters".into(),
        ));
    }
    Ok(key)
}

/// `staff:<id>`, the cashier as the ledger records them, and their limits.
fn staff_actor(staff: &Staff) -> (String, PointLimits) {
    let user = &staff.session.user;
    (
        format!("staff:{}", user.id),
        PointLimits {
            per_operation: user.max_points_per_operation,
            per_day: user.max_points_per_day,
        },
    )
}

#[derive(Deserialize)]
struct HoldRequest {
    csrf: String,
    points: i64,
    key: String,
}

/// Pay with points, step one: the points are reserved while the customer confirms.
async fn hold(
    State(state): State<AppState>,
    staff: Staff,
    audit: crate::web::audit::Audit,
    Path(member_id): Path<String>,
    Json(req): Json<HoldRequest>,
) -> Response {
    if let Err(r) = cashier(&staff, &req.csrf) {
        return r.into_response();
    }
    let key = match operation_key(&req.key) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    if !(1..=MAX_POINTS).contains(&req.points) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "enter the points to pay with, more than 0",
        );
    }
    audit.members([member_id.as_str()]);
    let (actor, limits) = staff_actor(&staff);
    let canonical = json!({"hold_for": member_id, "points": req.points});
    let idempotency = points::idempotency(&actor, key, &canonical);
    let now = now_ms();
    let new = crate::storage::NewHold {
        points: req.points,
        expires_at: now + HOLD_MS,
        external_ref: None,
    };
    let by = Actor {
        id: Some(&actor),
        limits,
    };
    match state
        .store
        .create_hold(&member_id, &new, by, Some(&idempotency), now)
        .await
    {
        Ok((hold, _)) => Json(json!({"hold_id": hold.id, "points": hold.points})).into_response(),
        Err(e) => refusal(e),
    }
}

/// A cashier's hold lasts while the customer confirms at the till.
const HOLD_MS: i64 = 10 * 60 * 1000;

#[derive(Deserialize)]
struct ResolveRequest {
    csrf: String,
    /// The capture's own key (a retry sends the same); unused by a void.
    #[serde(default)]
    key: String,
}

/// Pay with points, confirmed: the held points are redeemed, within the cashier's limits.
async fn capture(
    State(state): State<AppState>,
    staff: Staff,
    audit: crate::web::audit::Audit,
    Path(hold_id): Path<String>,
    Json(req): Json<ResolveRequest>,
) -> Response {
    if let Err(r) = cashier(&staff, &req.csrf) {
        return r.into_response();
    }
    let key = match operation_key(&req.key) {
        Ok(k) => k,
        Err(r) => return r.into_response(),
    };
    let (actor, limits) = staff_actor(&staff);
    let idempotency = points::idempotency(&actor, key, &json!({"capture": hold_id}));
    let by = Actor {
        id: Some(&actor),
        limits,
    };
    match state
        .store
        .capture_hold(&hold_id, None, by, Some(&idempotency), now_ms())
        .await
    {
        Ok((c, replayed)) => {
            audit.members([c.hold.member_id.as_str()]);
            tracing::info!(hold = %hold_id, staff = %staff.session.user.id, replayed, "paid with points");
            Json(json!({
                "entry_id": c.outcome.entry.id,
                "points": c.outcome.entry.points,
                "balance": c.outcome.balance,
                "available": c.outcome.balance - state.store.held_points(&c.hold.member_id).await.unwrap_or(0),
                "tier": c.outcome.tier,
            }))
            .into_response()
        }
        Err(e) => refusal(e),
    }
}

/// Pay with points, cancelled: the held points are released.
async fn void(
    State(state): State<AppState>,
    staff: Staff,
    audit: crate::web::audit::Audit,
    Path(hold_id): Path<String>,
    Json(req): Json<ResolveRequest>,
) -> Response {
    if let Err(r) = cashier(&staff, &req.csrf) {
        return r.into_response();
    }
    match state.store.void_hold(&hold_id, now_ms()).await {
        Ok(hold) => {
            audit.members([hold.member_id.as_str()]);
            let member = state.store.get_member(&hold.member_id).await;
            let held = state.store.held_points(&hold.member_id).await;
            match (member, held) {
                (Ok(m), Ok(held)) => Json(json!({
                    "hold_id": hold.id, "state": hold.state.as_str(), "available": m.points - held,
                }))
                .into_response(),
                (Err(e), _) | (_, Err(e)) => internal(e),
            }
        }
        Err(e) => refusal(e),
    }
}

/// What the page says of a refused operation.
fn refusal(e: StorageError) -> Response {
    match e {
        StorageError::Insufficient { available } => refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the card has {available} points available; that is not enough"),
        ),
        StorageError::IdempotencyMismatch => refuse(
            StatusCode::CONFLICT,
            "this operation was already recorded with other details; start a new one",
        ),
        StorageError::OverLimit {
            limit,
            points,
            moved_today: None,
        } => refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this operation moves {points} points; your account may move at most {limit} points in one operation. Ask a manager."
            ),
        ),
        StorageError::OverLimit {
            limit,
            points,
            moved_today: Some(moved),
        } => refuse(
            StatusCode::FORBIDDEN,
            format!(
                "your account may move at most {limit} points a day (UTC); {moved} moved today, and this operation moves {points}. Ask a manager."
            ),
        ),
        StorageError::NotFound(what) => refuse(StatusCode::NOT_FOUND, format!("no such {what}")),
        StorageError::Rejected(why) => refuse(StatusCode::UNPROCESSABLE_ENTITY, why),
        StorageError::Conflict(why) => refuse(StatusCode::CONFLICT, why),
        e => internal(e),
    }
}
