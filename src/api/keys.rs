//! API keys over the API: admins create (the key is shown once), list and revoke them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::{Caller, create_key as new_key};
use super::error::{ApiError, ApiJson};
use super::views::{ErrorBody, KeyCreated, KeyList, KeyView};
use crate::app::AppState;
use crate::ledger::{MAX_POINTS, PointLimits};
use crate::storage::Role;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[schema(max_length = 100)]
    name: String,
    /// admin, marketer, cashier or integration.
    role: String,
    /// For cashier keys: the most points one purchase or redemption may move.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_points: Option<i64>,
    /// For cashier keys: the most points its purchases and redemptions may move in a UTC day.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    max_points_per_day: Option<i64>,
}

/// Create an API key. The key is in this response only; it is stored hashed.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = CreateKey,
    responses((status = 201, description = "Created", body = KeyCreated), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody)))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    caller.require(&[Role::Admin])?;
    let role: Role = body.role.parse().map_err(ApiError::bad_request)?;
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::bad_request("name must be 1 to 100 characters"));
    }
    for (field, value) in [
        ("max_points", body.max_points),
        ("max_points_per_day", body.max_points_per_day),
    ] {
        if let Some(n) = value
            && !(1..=MAX_POINTS).contains(&n)
        {
            return Err(ApiError::bad_request(format!(
                "{field} must be between 1 and {}",
                crate::ledger::grouped(MAX_POINTS)
            )));
        }
    }
    let limits = PointLimits {
        per_operation: body.max_points,
        per_day: body.max_points_per_day,
    };
    let (id, key) = new_key(&state.store, &body.name, role, limits).await?;
    let created = KeyCreated {
        id,
        name: body.name,
        role: role.as_str().into(),
        max_points: limits.per_operation,
        max_points_per_day: limits.per_day,
        key,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// List API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys",
    responses((status = 200, description = "OK", body = KeyList), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody)))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<KeyList>, ApiError> {
    caller.require(&[Role::Admin])?;
    let keys = state.store.list_api_keys().await?;
    let items = keys
        .iter()
        .map(|k| KeyView {
            id: k.id.clone(),
            name: k.name.clone(),
            role: k.role.as_str().into(),
            max_points: k.limits.per_operation,
            max_points_per_day: k.limits.per_day,
            revoked: k.revoked,
        })
        .collect();
    Ok(Json(KeyList { items }))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path)),
    responses((status = 204, description = "No content"), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    state.store.revoke_api_key(&key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
