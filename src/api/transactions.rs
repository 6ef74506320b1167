//! `POST /api/v1/members/{id}/transactions`: every change to points. Each write carries an
//! `Idempotency-Key`; a retry with the same key and body returns the original result, the same
//! key with another body is a 409.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiQuery};
use super::views::{EntryView, ErrorBody, Paged, TransactionView};
use super::{Page, paged};
use crate::app::AppState;
use crate::domain::{Checker, Invalid};
use crate::ledger::{MAX_AMOUNT, MAX_POINTS, Operation, Origin, grouped};
use crate::service::points;
use crate::storage::{Actor, Role};

pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransactionType {
    Earn,
    Redeem,
    Refund,
    Adjust,
    Reversal,
}

/// A transaction request. Which fields apply depends on `type`:
/// earn takes `amount_minor` (a purchase) or `points`; redeem takes `points`; refund takes
/// `amount_minor` and the purchase's `external_ref`; adjust takes signed `points` and a `reason`;
/// reversal takes `entry_id`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionRequest {
    #[serde(rename = "type")]
    pub kind: TransactionType,
    pub amount_minor: Option<i64>,
    pub points: Option<i64>,
    #[schema(max_length = 200)]
    pub external_ref: Option<String>,
    #[schema(max_length = 200)]
    pub channel: Option<String>,
    #[schema(max_length = 200)]
    pub store_id: Option<String>,
    #[schema(max_length = 200)]
    pub partner_id: Option<String>,
    /// Required for `adjust`.
    #[schema(max_length = 500)]
    pub reason: Option<String>,
    #[schema(max_length = 200)]
    pub entry_id: Option<String>,
}

impl TransactionRequest {
    fn operation(&self) -> Result<Operation, Invalid> {
        let mut c = Checker::default();
        let positive = |c: &mut Checker, field: &str, v: Option<i64>| -> i64 {
            // Points are bounded by what one posting may move, amounts by MAX_AMOUNT.
            let max = if field == "points" {
                MAX_POINTS
            } else {
                MAX_AMOUNT
            };
            match v {
                None => {
                    c.fail(
                        field,
                        format!("{field} is required for a {} transaction", self.kind_name()),
                    );
                    0
                }
                Some(n) if !(1..=max).contains(&n) => {
                    c.fail(
                        field,
                        format!("{field} must be between 1 and {}, got {n}", grouped(max)),
                    );
                    0
                }
                Some(n) => n,
            }
        };
        let op = match self.kind {
            TransactionType::Earn => match (self.amount_minor, self.points) {
                (Some(_), Some(_)) => {
                    c.fail(
                        "amount_minor",
                        "an earn takes either amount_minor (a purchase) or points, not both",
                    );
                    None
                }
                (None, Some(_)) => Some(Operation::EarnPoints {
                    points: positive(&mut c, "points", self.points),
                }),
                _ => Some(Operation::EarnPurchase {
                    amount_minor: positive(&mut c, "amount_minor", self.amount_minor),
                }),
            },
            TransactionType::Redeem => Some(Operation::Redeem {
                points: positive(&mut c, "points", self.points),
            }),
            TransactionType::Refund => {
                if self.external_ref.is_none() {
                    c.fail(
                        "external_ref",
                        "a refund needs the external_ref of the purchase it refunds",
                    );
                }
                Some(Operation::Refund {
                    amount_minor: positive(&mut c, "amount_minor", self.amount_minor),
                })
            }
            TransactionType::Adjust => {
                let points = self.points.unwrap_or(0);
                if points == 0 || !(-MAX_POINTS..=MAX_POINTS).contains(&points) {
                    c.fail(
                        "points",
                        format!(
                            "an adjust needs non-zero points between -{} and {}",
                            grouped(MAX_POINTS),
                            grouped(MAX_POINTS)
                        ),
                    );
                }
                let reason = self.reason.clone().unwrap_or_default();
                crate::domain::check_text(&mut c, "reason", &reason, 500);
                Some(Operation::Adjust { points, reason })
            }
            TransactionType::Reversal => match &self.entry_id {
                Some(id) => Some(Operation::Reverse {
                    entry_id: id.clone(),
                }),
                None => {
                    c.fail("entry_id", "a reversal needs the entry_id it reverses");
                    None
                }
            },
        };
        for (field, value) in [
            ("external_ref", &self.external_ref),
            ("channel", &self.channel),
            ("store_id", &self.store_id),
            ("partner_id", &self.partner_id),
            ("entry_id", &self.entry_id),
        ] {
            if let Some(v) = value {
                crate::domain::check_text(&mut c, field, v, 200);
            }
        }
        c.finish()?;
        Ok(op.expect("an operation when there are no problems"))
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            TransactionType::Earn => "earn",
            TransactionType::Redeem => "redeem",
            TransactionType::Refund => "refund",
            TransactionType::Adjust => "adjust",
            TransactionType::Reversal => "reversal",
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            external_ref: self.external_ref.clone(),
            channel: self.channel.clone(),
            store_id: self.store_id.clone(),
            partner_id: self.partner_id.clone(),
        }
    }
}

/// Which roles may post which transactions: cashiers earn and redeem (within their key's
/// limits, checked by the ledger in the posting's transaction); adjusting and reversing is
/// for admins and integrations.
fn authorize(caller: &Caller, req: &TransactionRequest) -> Result<(), ApiError> {
    match req.kind {
        TransactionType::Earn | TransactionType::Redeem => {
            caller.require(&[Role::Admin, Role::Integration, Role::Cashier])
        }
        _ => caller.require(&[Role::Admin, Role::Integration]),
    }
}

/// Post a change to a member's points. Requires an `Idempotency-Key` header: a retry with the
/// same key and body returns the original result (with `Idempotent-Replayed: true`) and writes
/// nothing; the same key with another body is a 409.
#[utoipa::path(post, path = "/api/v1/members/{member_id}/transactions", tag = "transactions",
    params(
        ("member_id" = String, Path),
        ("Idempotency-Key" = String, Header, description = "1 to 255 characters, unique per request of this API key"),
    ),
    request_body = TransactionRequest,
    responses(
        (status = 201, description = "Created", body = TransactionView),
        (status = 400, description = "invalid fields, or no Idempotency-Key", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody),
        (status = 403, description = "the key's role may not post this, or a cashier limit", body = ErrorBody),
        (status = 404, description = "unknown member, entry or purchase", body = ErrorBody),
        (status = 409, description = "Idempotency-Key reused with another request", body = ErrorBody),
        (status = 422, description = "not enough points (`details.available`), or a rule refuses it", body = ErrorBody),
    ))]
pub async fn post_transaction(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TransactionRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let op = req.operation()?;
    authorize(&caller, &req)?;
    // The hash covers the member and the request as parsed, so formatting differences in the
    // JSON do not count as a different request.
    let canonical = json!({"member_id": member_id, "request": req});
    let idempotency = points::idempotency(&caller.key_id, key, &canonical);
    let by = Actor {
        id: Some(&caller.key_id),
        limits: caller.limits,
    };
    let (outcome, replayed) = points::post(
        &state.store,
        &member_id,
        &op,
        &req.origin(),
        by,
        Some(&idempotency),
    )
    .await?;
    let mut response = (StatusCode::CREATED, Json(TransactionView::from(&outcome))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// List a member's ledger entries, oldest first.
#[utoipa::path(get, path = "/api/v1/members/{member_id}/transactions", tag = "transactions",
    params(("member_id" = String, Path), Page),
    responses((status = 200, description = "OK", body = Paged<EntryView>), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn list_transactions(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Paged<EntryView>>, ApiError> {
    caller.require(&[
        Role::Admin,
        Role::Marketer,
        Role::Integration,
        Role::Cashier,
    ])?;
    state.store.get_member(&member_id).await?;
    let (after, limit) = page.parse()?;
    let entries = state
        .store
        .list_entries(&member_id, after, limit + 1)
        .await?;
    Ok(Json(paged(
        entries,
        limit,
        |e| (e.created_at, e.id.clone()),
        |e| EntryView::from(e),
    )))
}

/// The request's `Idempotency-Key`, required on writes that a client may retry.
pub fn idempotency_key(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| {
            ApiError::bad_request("the Idempotency-Key header is required on writes (1 to 255 characters), so a retry never double-credits")
        })
}
