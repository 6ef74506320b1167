//! Members and their passes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use crate::app::AppState;
use crate::domain::{Member, NewMember, Pass};
use crate::storage::Role;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    display_name: String,
    external_id: Option<String>,
}

pub fn member_json(state: &AppState, m: &Member, p: &Pass) -> Value {
    json!({
        "id": m.id,
        "program_id": m.program_id,
        "display_name": m.display_name,
        "external_id": m.external_id,
        "barcode": m.barcode,
        "points": m.points,
        "created_at": m.created_at,
        "pass": {
            "serial_number": p.serial_number,
            "pass_type_identifier": p.pass_type_identifier,
            "template_id": p.template_id,
            "updated_at": p.updated_at,
            "pass_url": state.pass_url(p),
        },
    })
}

pub async fn create_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    ApiJson(body): ApiJson<CreateMember>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    let program = state.store.get_program(&program_id).await?;
    let new = NewMember {
        display_name: body.display_name,
        external_id: body.external_id,
    };
    let (member, pass) = state.cards.create_member(&program, &new).await?;
    Ok((
        StatusCode::CREATED,
        Json(member_json(&state, &member, &pass)),
    ))
}

pub async fn get_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[
        Role::Admin,
        Role::Marketer,
        Role::Integration,
        Role::Cashier,
    ])?;
    let member = state.store.get_member(&member_id).await?;
    let pass = state.store.pass_for_member(&member_id).await?;
    Ok(Json(member_json(&state, &member, &pass)))
}

pub async fn download_pass(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer, Role::Integration])?;
    let pass = state.store.pass_for_member(&member_id).await?;
    let bytes = state.cards.pkpass(&pass).await?;
    Ok(super::pkpass_response(bytes, pass.updated_at))
}
