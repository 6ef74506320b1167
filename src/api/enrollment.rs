//! Joining and distribution over the API: a program's join-page settings, personal install
//! links for campaigns, the CSV import, and a member's consent records.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiJson};
use super::views::ErrorBody;
use crate::app::AppState;
use crate::domain::enrollment::EnrollmentSettings;
use crate::enrollment::import::{self, ImportError, ImportReport};
use crate::storage::Role;

/// A program's join page (`/join/<slug>`): the fields it asks for, the consent texts, the
/// privacy policy and the welcome bonus.
#[utoipa::path(get, path = "/api/v1/programs/{program_id}/enrollment", tag = "enrollment",
    params(("program_id" = String, Path)),
    responses((status = 200, description = "OK", body = EnrollmentSettings), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn get_enrollment(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
) -> Result<Json<EnrollmentSettings>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer])?;
    Ok(Json(state.store.program_enrollment(&program_id).await?))
}

/// Replace a program's join-page settings. The page is open once `privacy_policy_url` is set.
/// Change `policy_version` whenever the policy or a consent text changes: every consent
/// records the version and the exact text it was given for.
#[utoipa::path(put, path = "/api/v1/programs/{program_id}/enrollment", tag = "enrollment",
    params(("program_id" = String, Path)), request_body = EnrollmentSettings,
    responses((status = 200, description = "OK", body = EnrollmentSettings), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn put_enrollment(
    State(state): State<AppState>,
    caller: Caller,
    Path(program_id): Path<String>,
    ApiJson(settings): ApiJson<EnrollmentSettings>,
) -> Result<Json<EnrollmentSettings>, ApiError> {
    caller.require(&[Role::Admin])?;
    settings.validate()?;
    state
        .store
        .set_program_enrollment(&program_id, &settings)
        .await?;
    Ok(Json(settings))
}

#[derive(Serialize, ToSchema)]
pub struct InstallLink {
    /// Opens the member's own card page: Apple Wallet, Google Wallet, or both and a QR code.
    pub url: String,
    /// Seconds since the epoch; `enrollment.install_link_days` from now.
    pub expires_at: i64,
}

/// A member's personal install link, signed and expiring, for an e-mail or SMS campaign.
#[utoipa::path(post, path = "/api/v1/members/{member_id}/install-link", tag = "enrollment",
    params(("member_id" = String, Path)),
    responses((status = 200, description = "OK", body = InstallLink), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn install_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<InstallLink>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer, Role::Integration])?;
    state.store.get_member(&member_id).await?;
    let generation = state
        .store
        .card_generations(std::slice::from_ref(&member_id))
        .await?;
    let generation = generation.get(&member_id).copied().unwrap_or(0);
    let (url, expires_at) = state.install_url(&member_id, generation);
    Ok(Json(InstallLink { url, expires_at }))
}

/// Import members from CSV (`text/csv`; columns `external_id`, `name`, and optionally
/// `email`, `phone`, `points`), idempotently on `external_id`: existing members are left as
/// they are. Bad rows are reported by line and skipped; every imported or existing row gets a
/// personal install link.
#[utoipa::path(post, path = "/api/v1/programs/{program_id}/imports", tag = "enrollment",
    params(("program_id" = String, Path)),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, description = "The report", body = ImportReport), (status = 400, description = "The file as a whole is unusable (header, columns)", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn import_members(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    Path(program_id): Path<String>,
    body: Bytes,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    let program = state.store.get_program(&program_id).await?;
    match import::run(&state, &program, body.as_ref(), |_, _| {}).await {
        Ok(report) => {
            // Every member created or found gets an install link: the import touched each.
            audit.members(report.links.iter().map(|l| l.member_id.as_str()));
            Ok(Json(report))
        }
        Err(ImportError::File(m)) => Err(ApiError::bad_request(m)),
        Err(ImportError::Storage(e)) => Err(e.into()),
    }
}

#[derive(Serialize, ToSchema)]
pub struct ConsentView {
    /// `data` or `marketing`.
    pub kind: String,
    pub granted: bool,
    pub policy_version: String,
    pub policy_url: Option<String>,
    /// The exact text next to the box.
    pub text_shown: String,
    pub source: String,
    /// Milliseconds since the epoch.
    pub recorded_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ConsentList {
    pub consents: Vec<ConsentView>,
}

/// A member's consent records, oldest first: proof of what they agreed to, as shown.
#[utoipa::path(get, path = "/api/v1/members/{member_id}/consents", tag = "enrollment",
    params(("member_id" = String, Path)),
    responses((status = 200, description = "OK", body = ConsentList), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn consents(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<ConsentList>, ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    state.store.get_member(&member_id).await?;
    let consents = state
        .store
        .consents(&member_id)
        .await?
        .into_iter()
        .map(|c| ConsentView {
            kind: c.kind,
            granted: c.granted,
            policy_version: c.policy_version,
            policy_url: c.policy_url,
            text_shown: c.text_shown,
            source: c.source,
            recorded_at: c.recorded_at,
        })
        .collect();
    Ok(Json(ConsentList { consents }))
}
