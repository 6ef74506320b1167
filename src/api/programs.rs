//! Programs and card templates.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use crate::app::AppState;
use crate::domain::{Invalid, NewProgram, Program, Template, TemplateDesign};
use crate::ledger::LoyaltyRules;
use crate::passes::apple::images::ImageKind;
use crate::storage::Role;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProgram {
    slug: String,
    name: String,
    pass_type_identifier: String,
    team_identifier: String,
    organization_name: String,
    /// Earn rule, expiry and tiers; defaults to 1 point per 100 minor units, no expiry, no tiers.
    #[serde(default)]
    rules: LoyaltyRules,
}

pub fn program_json(p: &Program) -> Value {
    json!({
        "id": p.id,
        "slug": p.slug,
        "name": p.name,
        "pass_type_identifier": p.pass_type_identifier,
        "team_identifier": p.team_identifier,
        "organization_name": p.organization_name,
        "rules": p.rules,
        "created_at": p.created_at,
    })
}

pub async fn create_program(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateProgram>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Admin])?;
    let new = NewProgram {
        slug: body.slug,
        name: body.name,
        pass_type_identifier: body.pass_type_identifier,
        team_identifier: body.team_identifier,
        organization_name: body.organization_name,
        rules: body.rules,
    };
    new.validate()?;
    state
        .cards
        .check_program_signable(&new.pass_type_identifier, &new.team_identifier)?;
    let program = state.store.insert_program(&new).await?;
    Ok((StatusCode::CREATED, Json(program_json(&program))))
}

pub async fn get_program(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer, Role::Integration])?;
    Ok(Json(program_json(
        &state.store.get_program(&program_id).await?,
    )))
}

/// Replaces the program's earn rule, expiry and tiers. Applies to changes from now on: past
/// entries and lots keep the terms they were written under.
pub async fn put_rules(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    ApiJson(rules): ApiJson<LoyaltyRules>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin])?;
    rules.validate()?;
    Ok(Json(program_json(
        &state
            .store
            .update_program_rules(&program_id, &rules)
            .await?,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    name: String,
    design: TemplateDesign,
    /// Base64 PNG or JPEG uploads; `icon` is required.
    #[serde(default)]
    images: Images,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Images {
    icon: Option<String>,
    logo: Option<String>,
    strip: Option<String>,
}

fn template_json(t: &Template) -> Value {
    json!({
        "id": t.id,
        "program_id": t.program_id,
        "name": t.name,
        "version": t.version,
        "design": t.design,
        "updated_at": t.updated_at,
    })
}

pub async fn create_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    ApiJson(body): ApiJson<CreateTemplate>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(&[Role::Admin, Role::Marketer])?;
    // 404 before validation, so a wrong program id is named as such.
    state.store.get_program(&program_id).await?;
    let mut uploads = Vec::new();
    let mut problems = Vec::new();
    for (kind, data) in [
        (ImageKind::Icon, body.images.icon),
        (ImageKind::Logo, body.images.logo),
        (ImageKind::Strip, body.images.strip),
    ] {
        let Some(data) = data else { continue };
        match data_encoding::BASE64.decode(data.trim().as_bytes()) {
            Ok(bytes) => uploads.push((kind, bytes)),
            Err(_) => problems.extend(
                Invalid::one(
                    format!("images.{}", kind.name()),
                    format!("images.{} is not valid base64", kind.name()),
                )
                .problems,
            ),
        }
    }
    if !problems.is_empty() {
        return Err(Invalid { problems }.into());
    }
    let template = state
        .cards
        .create_template(&program_id, &body.name, body.design, uploads)
        .await?;
    Ok((StatusCode::CREATED, Json(template_json(&template))))
}

pub async fn get_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(template_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer, Role::Integration])?;
    Ok(Json(template_json(
        &state.store.get_template(&template_id).await?,
    )))
}

/// Replaces one image with the raw PNG or JPEG body; a new template version.
pub async fn put_image(
    State(state): State<AppState>,
    caller: Caller,
    Path((template_id, kind)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer])?;
    let kind = ImageKind::parse(&kind).ok_or_else(|| {
        ApiError::not_found(&format!(
            "image kind {kind:?} (a storeCard has icon, logo and strip)"
        ))
    })?;
    state.store.get_template(&template_id).await?;
    let template = state
        .cards
        .replace_image(&template_id, kind, body.to_vec())
        .await?;
    Ok(Json(template_json(&template)))
}
