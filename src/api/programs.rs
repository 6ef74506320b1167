//! Programs (with their loyalty rules) and card templates.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use super::views::{ErrorBody, ProgramView, TemplateView};
use crate::app::AppState;
use crate::domain::{Invalid, NewProgram, TemplateDesign};
use crate::ledger::LoyaltyRules;
use crate::passes::apple::images::ImageKind;
use crate::storage::Role;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProgram {
    /// Lowercase letters, digits and '-'; used in join links.
    #[schema(max_length = 64)]
    slug: String,
    #[schema(max_length = 200)]
    name: String,
    /// Must equal the signing certificate's UID, e.g. `pass.com.example.loyalty`.
    #[schema(max_length = 255)]
    pass_type_identifier: String,
    /// Apple Team ID; must equal the signing certificate's OU.
    #[schema(max_length = 10)]
    team_identifier: String,
    #[schema(max_length = 200)]
    organization_name: String,
    /// Earn rule, expiry and tiers; defaults to 1 point per 100 minor units, no expiry, no tiers.
    #[serde(default)]
    rules: LoyaltyRules,
}

/// Create a program.
#[utoipa::path(post, path = "/api/v1/programs", tag = "programs", request_body = CreateProgram,
    responses(
        (status = 201, description = "Created", body = ProgramView),
        (status = 400, description = "invalid fields, or identifiers the signing certificate cannot sign", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 409, description = "slug taken", body = ErrorBody),
    ))]
pub async fn create_program(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateProgram>,
) -> Result<(StatusCode, Json<ProgramView>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(ProgramView::from(&program))))
}

/// Get a program.
#[utoipa::path(get, path = "/api/v1/programs/{program_id}", tag = "programs",
    params(("program_id" = String, Path)),
    responses((status = 200, description = "OK", body = ProgramView), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn get_program(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
) -> Result<Json<ProgramView>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer, Role::Integration])?;
    Ok(Json(ProgramView::from(
        &state.store.get_program(&program_id).await?,
    )))
}

/// Replace a program's earn rule, expiry and tiers. Applies to changes from now on: past
/// entries and lots keep the terms they were written under.
#[utoipa::path(put, path = "/api/v1/programs/{program_id}/rules", tag = "programs",
    params(("program_id" = String, Path)), request_body = LoyaltyRules,
    responses((status = 200, description = "OK", body = ProgramView), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn put_rules(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    ApiJson(rules): ApiJson<LoyaltyRules>,
) -> Result<Json<ProgramView>, ApiError> {
    caller.require(&[Role::Admin])?;
    let program = crate::service::programs::set_rules(&state.store, &program_id, rules).await?;
    Ok(Json(ProgramView::from(&program)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    #[schema(max_length = 200)]
    name: String,
    design: TemplateDesign,
    #[serde(default)]
    images: Images,
}

/// Base64 PNG or JPEG uploads, at most 5 MB each; `icon` is required.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Images {
    icon: Option<String>,
    logo: Option<String>,
    strip: Option<String>,
}

/// Create a card template for a program; new members get the program's newest template.
#[utoipa::path(post, path = "/api/v1/programs/{program_id}/templates", tag = "templates",
    params(("program_id" = String, Path)), request_body = CreateTemplate,
    responses(
        (status = 201, description = "Created", body = TemplateView),
        (status = 400, description = "every problem of the design and images, by field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn create_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    ApiJson(body): ApiJson<CreateTemplate>,
) -> Result<(StatusCode, Json<TemplateView>), ApiError> {
    caller.require(&[Role::Admin, Role::Marketer])?;
    // 404 before validation, so a wrong program id is named as such.
    state.store.get_program(&program_id).await?;
    let mut uploads = Vec::new();
    let mut problems = Vec::new();
    let images = body.images;
    for (kind, data) in [
        (ImageKind::Icon, images.icon),
        (ImageKind::Logo, images.logo),
        (ImageKind::Strip, images.strip),
    ] {
        let Some(data) = data else { continue };
        match data_encoding::BASE64.decode(data.trim().as_bytes()) {
            Ok(bytes) => uploads.push((kind, bytes)),
            Err(_) => {
                let field = format!("images.{}", kind.name());
                problems
                    .extend(Invalid::one(&field, format!("{field} is not valid base64")).problems)
            }
        }
    }
    if !problems.is_empty() {
        return Err(Invalid { problems }.into());
    }
    let template = state
        .cards
        .create_template(&program_id, &body.name, body.design, uploads)
        .await?;
    Ok((StatusCode::CREATED, Json(TemplateView::from(&template))))
}

/// Get a template.
#[utoipa::path(get, path = "/api/v1/templates/{template_id}", tag = "templates",
    params(("template_id" = String, Path)),
    responses((status = 200, description = "OK", body = TemplateView), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn get_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(template_id): Path<String>,
) -> Result<Json<TemplateView>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer, Role::Integration])?;
    Ok(Json(TemplateView::from(
        &state.store.get_template(&template_id).await?,
    )))
}

/// Replace one image (icon, logo or strip) with the raw PNG or JPEG body: a new template version.
#[utoipa::path(put, path = "/api/v1/templates/{template_id}/images/{kind}", tag = "templates",
    params(("template_id" = String, Path), ("kind" = String, Path, description = "icon, logo or strip")),
    request_body(content = Vec<u8>, content_type = "image/png", description = "PNG or JPEG, at most 5 MB"),
    responses((status = 200, description = "OK", body = TemplateView), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn put_image(
    State(state): State<AppState>,
    caller: Caller,
    Path((template_id, kind)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<TemplateView>, ApiError> {
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
    Ok(Json(TemplateView::from(&template)))
}

/// The longest retention period a program may set: 50 years.
const MAX_RETENTION_MONTHS: i64 = 600;

/// A program's retention: members with no activity (a purchase, a redemption, a refund, a
/// consent given) for `inactive_months` are erased by the retention job, as
/// `POST /api/v1/members/{id}/erase` would. `null` (the default) keeps members until erased on
/// request.
#[derive(Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[schema(minimum = 1, maximum = 600)]
    inactive_months: Option<i64>,
}

/// Read a program's retention.
#[utoipa::path(get, path = "/api/v1/programs/{program_id}/retention", tag = "programs",
    params(("program_id" = String, Path)),
    responses((status = 200, description = "OK", body = Retention), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn get_retention(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
) -> Result<Json<Retention>, ApiError> {
    caller.require(&[Role::Admin])?;
    let inactive_months = state.store.retention(&program_id).await?;
    Ok(Json(Retention { inactive_months }))
}

/// Set a program's retention (see `Retention`); `{"inactive_months": null}` turns it off.
#[utoipa::path(put, path = "/api/v1/programs/{program_id}/retention", tag = "programs",
    params(("program_id" = String, Path)), request_body = Retention,
    responses((status = 200, description = "OK", body = Retention), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn put_retention(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    ApiJson(body): ApiJson<Retention>,
) -> Result<Json<Retention>, ApiError> {
    caller.require(&[Role::Admin])?;
    if let Some(m) = body.inactive_months
        && !(1..=MAX_RETENTION_MONTHS).contains(&m)
    {
        return Err(Invalid::one(
            "inactive_months",
            format!("inactive_months must be between 1 and {MAX_RETENTION_MONTHS}, or null for no retention; got {m}"),
        )
        .into());
    }
    state
        .store
        .set_retention(&program_id, body.inactive_months)
        .await?;
    Ok(Json(body))
}
