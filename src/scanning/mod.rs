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
        Ok(Some(m)) => match scanned(&state, &staff, &m).await {
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

/// Records `scan.performed` for the member a cashier looked up, then the member's view.
async fn scanned(
    state: &AppState,
    staff: &Staff,
    m: &Member,
) -> Result<serde_json::Value, StorageError> {
    use crate::storage::events::{NewEvent, kinds};
    let event = NewEvent::new(
        kinds::SCAN_PERFORMED,
        &m.id,
        json!({"by": format!("staff:{}", staff.session.user.id), "balance": m.points}),
    );
    state
        .store
        .record_event_now(event, crate::domain::now_ms())
        .await?;
    member_json(state, m).await
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
    let key = req.key.trim();
    if !(8..=255).contains(&key.len()) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the operation key must have 8 to 255 characters",
        );
    }
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
    let actor = format!("staff:{}", user.id);
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
        limits: PointLimits {
            per_operation: user.max_points_per_operation,
            per_day: user.max_points_per_day,
        },
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
                    "tier": outcome.tier,
                    "replayed": replayed,
                })),
            )
                .into_response()
        }
        Err(StorageError::Insufficient { available }) => refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the card has {available} points; that is not enough for this redemption"),
        ),
        Err(StorageError::IdempotencyMismatch) => refuse(
            StatusCode::CONFLICT,
            "this operation was already recorded with other details; start a new one",
        ),
        Err(StorageError::OverLimit {
            limit,
            points,
            moved_today: None,
        }) => refuse(
            StatusCode::FORBIDDEN,
            format!(
                "this operation moves {points} points; your account may move at most {limit} points in one operation. Ask a manager."
            ),
        ),
        Err(StorageError::OverLimit {
            limit,
            points,
            moved_today: Some(moved),
        }) => refuse(
            StatusCode::FORBIDDEN,
            format!(
                "your account may move at most {limit} points a day (UTC); {moved} moved today, and this operation moves {points}. Ask a manager."
            ),
        ),
        Err(StorageError::NotFound(_)) => refuse(StatusCode::NOT_FOUND, "no such member"),
        Err(StorageError::Rejected(why)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, why),
        Err(e) => internal(e),
    }
}
