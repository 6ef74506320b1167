//! Members, their standing (balance, tier, next expiry) and their passes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ApiJson, ApiQuery};
use super::views::{
    DeviceView, ErrorBody, GoogleCard, MemberSummary, MemberView, NextExpiry, Paged, PassDetail,
    PassList, PassView, TierProgress,
};
use super::{Page, paged};
use crate::app::AppState;
use crate::domain::{Member, NewMember, now_ms};
use crate::storage::Role;

const READERS: &[Role] = &[
    Role::Admin,
    Role::Marketer,
    Role::Integration,
    Role::Cashier,
];

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    #[schema(max_length = 200)]
    display_name: String,
    /// The member's id in the shop's CRM; unique per program.
    #[schema(max_length = 200)]
    external_id: Option<String>,
}

/// The full member view: balance, tier and progress to the next one, next expiry, the pass.
pub async fn member_view(state: &AppState, m: &Member) -> Result<MemberView, ApiError> {
    let program = state.store.get_program(&m.program_id).await?;
    let pass = state.store.pass_for_member(&m.id).await?;
    let standing = state
        .store
        .member_standing(&m.id, &program.rules, now_ms())
        .await?;
    let next = program.rules.next_tier(m.tier.as_deref());
    Ok(MemberView {
        member: MemberSummary::new(m, &program.rules),
        available_points: m.points - standing.held,
        tier_progress: TierProgress {
            basis: program.rules.tiers.basis,
            window_days: program.rules.tiers.window_days,
            qualifying: standing.qualifying,
            next_tier: next.map(|t| t.name.clone()),
            to_next_tier: next.map(|t| (t.threshold - standing.qualifying).max(0)),
        },
        next_expiry: standing.next_expiry.map(|(at, points)| NextExpiry {
            at,
            date: utc_date(at),
            points,
        }),
        pass: PassView::new(state, &pass),
    })
}

/// `YYYY-MM-DD` (UTC) of an instant in milliseconds.
fn utc_date(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// Create a member and their pass on the program's newest template.
#[utoipa::path(post, path = "/api/v1/programs/{program_id}/members", tag = "members",
    params(("program_id" = String, Path)), request_body = CreateMember,
    responses(
        (status = 201, description = "Created", body = MemberView),
        (status = 400, description = "invalid fields, or the program has no template yet", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "external_id taken in this program", body = ErrorBody),
    ))]
pub async fn create_member(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    Path(program_id): Path<String>,
    ApiJson(body): ApiJson<CreateMember>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    let program = state.store.get_program(&program_id).await?;
    let new = NewMember {
        display_name: body.display_name,
        external_id: body.external_id,
    };
    let (member, _) = state.cards.create_member(&program, &new).await?;
    audit.members([member.id.as_str()]);
    Ok((
        StatusCode::CREATED,
        Json(member_view(&state, &member).await?),
    ))
}

/// Get a member with their standing. `ETag` names the profile's version, for `PATCH`'s
/// `If-Match`.
#[utoipa::path(get, path = "/api/v1/members/{member_id}", tag = "members",
    params(("member_id" = String, Path)),
    responses((status = 200, description = "OK", body = MemberView), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn get_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(READERS)?;
    let member = state.store.get_member(&member_id).await?;
    let version = state.store.member_version(&member_id).await?;
    let mut response = Json(member_view(&state, &member).await?).into_response();
    response.headers_mut().insert(
        axum::http::header::ETAG,
        super::lifecycle::member_etag(version),
    );
    Ok(response)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FindMember {
    #[param(max_length = 512)]
    program_id: Option<String>,
    #[param(max_length = 512)]
    external_id: Option<String>,
    /// The value scanned from the card.
    #[param(max_length = 512)]
    barcode: Option<String>,
}

/// Find a member by barcode, or by program and external id.
#[utoipa::path(get, path = "/api/v1/members", tag = "members", params(FindMember),
    responses((status = 200, description = "OK", body = MemberView), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 429, description = "Too many barcode lookups with this key", body = ErrorBody)))]
pub async fn find_member(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    ApiQuery(q): ApiQuery<FindMember>,
) -> Result<Json<MemberView>, ApiError> {
    caller.require(READERS)?;
    let member = match (q.barcode, q.program_id, q.external_id) {
        (Some(barcode), None, None) => {
            // Barcodes are unguessable (128 bits), and throttled too, so no key can sweep them.
            if let Err(wait) = state
                .lookup_throttle
                .check(&format!("lookup:key:{}", caller.key_id))
                .await
            {
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_lookups",
                    format!(
                        "too many barcode lookups with this key; try again in {} s",
                        wait.as_secs().max(1)
                    ),
                ));
            }
            state.store.find_member_by_barcode(&barcode).await?
        }
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
    audit.members([member.id.as_str()]);
    Ok(Json(member_view(&state, &member).await?))
}

/// List a program's members, oldest first.
#[utoipa::path(get, path = "/api/v1/programs/{program_id}/members", tag = "members",
    params(("program_id" = String, Path), Page),
    responses((status = 200, description = "OK", body = Paged<MemberSummary>), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    Path(program_id): Path<String>,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Json<Paged<MemberSummary>>, ApiError> {
    caller.require(&[Role::Admin, Role::Marketer, Role::Integration])?;
    let program = state.store.get_program(&program_id).await?;
    let (after, limit) = page.parse()?;
    let members = state
        .store
        .list_members(&program_id, after, limit + 1)
        .await?;
    audit.members(members.iter().take(limit as usize).map(|m| m.id.as_str()));
    Ok(Json(paged(
        members,
        limit,
        |m| (m.created_at, m.id.clone()),
        |m| MemberSummary::new(m, &program.rules),
    )))
}

/// List a member's passes with the devices each is installed on.
#[utoipa::path(get, path = "/api/v1/members/{member_id}/passes", tag = "members",
    params(("member_id" = String, Path)),
    responses((status = 200, description = "OK", body = PassList), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn list_passes(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<PassList>, ApiError> {
    caller.require(READERS)?;
    state.store.get_member(&member_id).await?;
    let pass = state.store.pass_for_member(&member_id).await?;
    let devices = state.store.registrations(&pass.serial_number).await?;
    let devices = devices
        .into_iter()
        .map(|r| DeviceView {
            device_library_identifier: r.device_library_identifier,
            registered_at: r.created_at,
            last_push_at: r.last_push_at,
            last_push_result: r.last_push_result,
        })
        .collect();
    Ok(Json(PassList {
        items: vec![PassDetail {
            pass: PassView::new(&state, &pass),
            devices,
        }],
    }))
}

/// The member's Google Wallet card: its object (written now if it was not yet), an
/// "Add to Google Wallet" link and the sync status (the version Google has, whether a change
/// waits, the last error). 404 when Google Wallet is not configured.
#[utoipa::path(get, path = "/api/v1/members/{member_id}/google", tag = "members",
    params(("member_id" = String, Path)),
    responses((status = 200, description = "OK", body = GoogleCard), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found, or Google Wallet is not configured", body = ErrorBody), (status = 503, description = "Google Wallet did not answer; try again", body = ErrorBody)))]
pub async fn google_card(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<GoogleCard>, ApiError> {
    caller.require(READERS)?;
    state.store.get_member(&member_id).await?;
    let Some(google) = &state.google else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "google_not_configured",
            "Google Wallet is not configured: set google.issuer_id and google.service_account_key",
        ));
    };
    let (object, save_url) = google
        .save_link(&state.store, &member_id, state.config.public_base())
        .await
        .map_err(|e| match e {
            crate::google::sync::SyncError::Storage(s) => ApiError::from(s),
            crate::google::sync::SyncError::Google(g) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "google_unavailable",
                g.to_string(),
            ),
        })?;
    let status = state.store.google_sync_status(&member_id).await?;
    Ok(Json(GoogleCard {
        object_id: object.object_id,
        class_id: object.class_id,
        save_url,
        synced_points: object.synced_points,
        synced_at: object.synced_at,
        saved: state.store.google_saved(&member_id).await?,
        synced_version: object.synced_version,
        pending: status.pending,
        attempts: status.attempts,
        last_error: status.last_error,
        next_attempt_at: status.next_attempt_at,
        failed_messages: status
            .failed_messages
            .into_iter()
            .map(|(message_id, error)| super::views::FailedMessage { message_id, error })
            .collect(),
    }))
}

/// Download the member's signed Apple Wallet pass.
#[utoipa::path(get, path = "/api/v1/members/{member_id}/pass", tag = "members",
    params(("member_id" = String, Path)),
    responses(
        (status = 200, description = "the signed pass", content_type = "application/vnd.apple.pkpass", body = Vec<u8>),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
    ))]
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
