//! Members, their standing (balance, tier, next expiry) and their passes.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use super::{Page, page_json};
use crate::app::AppState;
use crate::domain::{Member, NewMember, Pass, now_ms};
use crate::storage::Role;

const READERS: &[Role] = &[
    Role::Admin,
    Role::Marketer,
    Role::Integration,
    Role::Cashier,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    display_name: String,
    external_id: Option<String>,
}

fn member_summary(m: &Member) -> Value {
    json!({
        "id": m.id,
        "program_id": m.program_id,
        "display_name": m.display_name,
        "external_id": m.external_id,
        "barcode": m.barcode,
        "points": m.points,
        "tier": m.tier,
        "created_at": m.created_at,
    })
}

fn pass_json(state: &AppState, p: &Pass) -> Value {
    json!({
        "serial_number": p.serial_number,
        "pass_type_identifier": p.pass_type_identifier,
        "template_id": p.template_id,
        "updated_at": p.updated_at,
        "pass_url": state.pass_url(p),
    })
}

/// The full member view: balance, tier and progress to the next one, next expiry, the pass.
async fn member_view(state: &AppState, m: &Member) -> Result<Value, ApiError> {
    let program = state.store.get_program(&m.program_id).await?;
    let pass = state.store.pass_for_member(&m.id).await?;
    let standing = state
        .store
        .member_standing(&m.id, &program.rules, now_ms())
        .await?;
    let next = program.rules.next_tier(m.tier.as_deref());
    let mut view = member_summary(m);
    view["tier_progress"] = json!({
        "basis": program.rules.tiers.basis,
        "window_days": program.rules.tiers.window_days,
        "qualifying": standing.qualifying,
        "next_tier": next.map(|t| &t.name),
        "to_next_tier": next.map(|t| (t.threshold - standing.qualifying).max(0)),
    });
    view["next_expiry"] = match standing.next_expiry {
        Some((at, points)) => json!({"at": at, "date": expiry_date(at), "points": points}),
        None => Value::Null,
    };
    view["pass"] = pass_json(state, &pass);
    Ok(view)
}

/// `YYYY-MM-DD` (UTC) of an expiry instant.
fn expiry_date(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
    t.format(&time::macros::format_description!("[year]-[month]-[day]"))
        .ok()
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
    let (member, _) = state.cards.create_member(&program, &new).await?;
    Ok((
        StatusCode::CREATED,
        Json(member_view(&state, &member).await?),
    ))
}

pub async fn get_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    let member = state.store.get_member(&member_id).await?;
    Ok(Json(member_view(&state, &member).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindMember {
    program_id: Option<String>,
    external_id: Option<String>,
    barcode: Option<String>,
}

/// `GET /api/v1/members?barcode=...` or `?program_id=...&external_id=...`.
pub async fn find_member(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<FindMember>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    let member = match (q.barcode, q.program_id, q.external_id) {
        (Some(barcode), None, None) => state.store.find_member_by_barcode(&barcode).await?,
        (None, Some(program), Some(external)) => {
            state
                .store
                .find_member_by_external_id(&program, &external)
                .await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "find a member by barcode, or by program_id and external_id together",
            ));
        }
    };
    let member = member.ok_or_else(|| ApiError::not_found("member"))?;
    Ok(Json(member_view(&state, &member).await?))
}

pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer, Role::Integration])?;
    state.store.get_program(&program_id).await?;
    let (after, limit) = page.parse()?;
    let members = state
        .store
        .list_members(&program_id, after, limit + 1)
        .await?;
    Ok(Json(page_json(
        members,
        limit,
        |m| (m.created_at, m.id.clone()),
        member_summary,
    )))
}

pub async fn list_passes(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(READERS)?;
    state.store.get_member(&member_id).await?;
    let pass = state.store.pass_for_member(&member_id).await?;
    Ok(Json(json!({ "items": [pass_json(&state, &pass)] })))
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
