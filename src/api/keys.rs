//! API keys over the API: admins create (the key is shown once), list and revoke them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Caller, create_key as new_key};
use super::error::{ApiError, ApiJson};
use crate::app::AppState;
use crate::ledger::MAX_AMOUNT;
use crate::storage::Role;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
    role: String,
    max_points: Option<i64>,
}

pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Admin])?;
    let role: Role = body.role.parse().map_err(ApiError::bad_request)?;
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(ApiError::bad_request("name must be 1 to 100 characters"));
    }
    if let Some(n) = body.max_points
        && !(1..=MAX_AMOUNT).contains(&n)
    {
        return Err(ApiError::bad_request(format!(
            "max_points must be between 1 and {MAX_AMOUNT}"
        )));
    }
    let (id, key) = new_key(&state.store, &body.name, role, body.max_points).await?;
    let body = json!({"id": id, "name": body.name, "role": role.as_str(), "max_points": body.max_points, "key": key});
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    let keys = state.store.list_api_keys().await?;
    let items: Vec<Value> = keys
        .iter()
        .map(|k| json!({"id": k.id, "name": k.name, "role": k.role.as_str(), "max_points": k.max_points, "revoked": k.revoked}))
        .collect();
    Ok(Json(json!({ "items": items })))
}

pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(&[Role::Admin])?;
    state.store.revoke_api_key(&key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
