//! A member's card lifecycle: end it, reissue it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::auth::Caller;
use super::error::ApiError;
use super::views::{ErrorBody, PassView};
use crate::app::AppState;
use crate::service::lifecycle;
use crate::storage::Role;

/// End the member's card: Apple Wallet shows the pass void (it is pushed), the Google object
/// becomes inactive, the install and download links answer 404; the ledger stays. Ending an
/// ended card changes nothing.
#[utoipa::path(delete, path = "/api/v1/members/{member_id}/card", tag = "members",
    params(("member_id" = String, Path)),
    responses(
        (status = 200, description = "The ended pass", body = PassView),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn end_card(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<PassView>, ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    let (pass, _) = lifecycle::end_card(&state.store, &member_id).await?;
    Ok(Json(PassView::new(&state, &pass)))
}

/// Reissue the member's card (lost or shared): a new pass with a new serial, barcode, PassKit
/// token and download link; the old pass is voided and pushed, and its links stop working.
/// Send an `Idempotency-Key` so a retried request does not void the card it made.
#[utoipa::path(post, path = "/api/v1/members/{member_id}/card/reissue", tag = "members",
    params(("member_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 characters; a retry with the same key returns the card the first request made")),
    responses(
        (status = 201, description = "The new pass", body = PassView),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "The member was erased, or the Idempotency-Key was used for another request", body = ErrorBody),
    ))]
pub async fn reissue_card(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<(StatusCode, Json<PassView>), ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    let key = match headers.get(super::transactions::IDEMPOTENCY_HEADER) {
        Some(_) => Some(super::transactions::idempotency_key(&headers)?),
        None => None,
    };
    let pass = lifecycle::reissue_card(
        &state.store,
        &member_id,
        key.map(|k| (caller.key_id.as_str(), k)),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(PassView::new(&state, &pass))))
}

/// What an erasure removed and what it kept.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErasureView {
    pub member_id: String,
    /// When the member was erased (the first erasure's time if erased before).
    pub erased_at: i64,
    pub removed: Removed,
    pub kept: Kept,
    /// Whether the removed values are also gone from the database file (SQLite: the WAL was
    /// truncated; `false` when a reader held it, and later checkpoints overwrite it).
    pub scrubbed: bool,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Removed {
    /// Profile fields that held a value: `display_name`, `external_id`, `email`, `phone`,
    /// `birthday`.
    pub fields: Vec<String>,
    /// Whether a live card was ended (voided in Apple Wallet, inactive in Google Wallet).
    pub card_ended: bool,
    /// Device registrations of the member's passes.
    pub registrations: u64,
    /// Devices (with their push tokens) that held no other card.
    pub devices: u64,
    /// Free-text reasons removed from ledger entries (the entries stay).
    pub ledger_reasons: u64,
    /// Messages sent or queued to the member's Google card.
    pub messages: u64,
    /// Stored answers of ledger requests that repeated the member's entries.
    pub idempotency_records: u64,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Kept {
    /// Ledger entries, with their points: balances and program totals are unchanged.
    pub ledger_entries: i64,
    /// Consent records, proof of what was agreed, tied to the member's random id.
    pub consents: i64,
}

/// Erase the member's personal data (the right to erasure): the card is ended, name, external
/// id, e-mail, phone and birthday are removed, devices and push tokens deleted; the ledger (sums
/// intact) and the consent records stay under the member's random id. Erasing again is harmless.
#[utoipa::path(post, path = "/api/v1/members/{member_id}/erase", tag = "members",
    params(("member_id" = String, Path)),
    responses(
        (status = 200, description = "What was removed and what was kept", body = ErasureView),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn erase_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<ErasureView>, ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    let e = lifecycle::erase_member(&state.store, &member_id).await?;
    Ok(Json(erasure_view(member_id, e)))
}

pub fn erasure_view(member_id: String, e: crate::storage::Erasure) -> ErasureView {
    ErasureView {
        member_id,
        erased_at: e.erased_at,
        removed: Removed {
            fields: e.fields.iter().map(|f| f.to_string()).collect(),
            card_ended: e.card_ended,
            registrations: e.registrations,
            devices: e.devices,
            ledger_reasons: e.ledger_reasons,
            messages: e.messages,
            idempotency_records: e.idempotency_records,
        },
        kept: Kept {
            ledger_entries: e.ledger_entries_kept,
            consents: e.consents_kept,
        },
        scrubbed: e.scrubbed,
    }
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawConsent {
    /// `marketing`: no more marketing messages; `all`: all processing, which erases the member.
    #[schema(pattern = "^(marketing|all)$")]
    pub scope: String,
    /// How the customer withdrew (a phone call, a letter): recorded with the row.
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WithdrawalView {
    /// The consent rows written (`granted: false`), appended to the member's records.
    pub recorded: Vec<super::enrollment::ConsentView>,
    /// Messages to the member's card that were queued and will not be sent.
    pub messages_cancelled: u64,
    /// For `all`: the erasure.
    pub erasure: Option<ErasureView>,
}

/// Record a consent withdrawal as new rows (source `api:<key id>`): `marketing` stops every
/// marketing message at once; `all` withdraws consent to all processing and erases the member.
#[utoipa::path(post, path = "/api/v1/members/{member_id}/consents", tag = "enrollment",
    params(("member_id" = String, Path)), request_body = WithdrawConsent,
    responses(
        (status = 201, description = "Recorded", body = WithdrawalView),
        (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
    ))]
pub async fn withdraw_consent(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    super::error::ApiJson(body): super::error::ApiJson<WithdrawConsent>,
) -> Result<(StatusCode, Json<WithdrawalView>), ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    let scope = match body.scope.as_str() {
        "marketing" => lifecycle::Withdraw::Marketing,
        "all" => lifecycle::Withdraw::All,
        other => {
            return Err(ApiError::bad_request(format!(
                "scope must be marketing or all, got {other:?}"
            )));
        }
    };
    let note = body.note.unwrap_or_default();
    if note.chars().count() > 500 {
        return Err(ApiError::bad_request("note must be at most 500 characters"));
    }
    let text = if note.is_empty() {
        "Withdrawn through the API".to_string()
    } else {
        format!("Withdrawn through the API: {note}")
    };
    let w = lifecycle::withdraw_consent(
        &state.store,
        &member_id,
        scope,
        &format!("api:{}", caller.key_id),
        &text,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(WithdrawalView {
            recorded: w
                .recorded
                .into_iter()
                .map(|c| super::enrollment::ConsentView {
                    kind: c.kind,
                    granted: c.granted,
                    policy_version: c.policy_version,
                    policy_url: c.policy_url,
                    text_shown: c.text_shown,
                    source: c.source,
                    recorded_at: c.recorded_at,
                })
                .collect(),
            messages_cancelled: w.messages_dropped,
            erasure: w.erasure.map(|e| erasure_view(member_id, e)),
        }),
    ))
}

/// `Some(value)` for a field that is present, even `null`: a PATCH tells "clear" from "leave".
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(d).map(Some)
}

/// A change to a member's profile; absent fields stay, `null` clears one (not the name).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMember {
    #[schema(max_length = 200)]
    #[serde(default)]
    pub display_name: Option<String>,
    #[schema(max_length = 200)]
    #[serde(default, deserialize_with = "present")]
    pub external_id: Option<Option<String>>,
    #[schema(max_length = 254)]
    #[serde(default, deserialize_with = "present")]
    pub email: Option<Option<String>>,
    #[schema(max_length = 32)]
    #[serde(default, deserialize_with = "present")]
    pub phone: Option<Option<String>>,
    /// `YYYY-MM-DD`.
    #[schema(max_length = 10)]
    #[serde(default, deserialize_with = "present")]
    pub birthday: Option<Option<String>>,
}

/// The ETag of a member's profile version.
pub fn member_etag(version: i64) -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_str(&format!("\"{version}\"")).expect("digits and quotes")
}

/// Change a member's profile: display name, external id, e-mail, phone, birthday. `If-Match`
/// must carry the `ETag` of `GET /api/v1/members/{id}` (412 when the member changed since, 428
/// without it). The card follows a new name or external id (pushed, and Google updated).
#[utoipa::path(patch, path = "/api/v1/members/{member_id}", tag = "members",
    params(("member_id" = String, Path),
        ("If-Match" = String, Header, description = "The ETag the member was read with")),
    request_body = PatchMember,
    responses(
        (status = 200, description = "The member as changed; the new ETag in `ETag`", body = super::views::MemberView),
        (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody),
        (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody),
        (status = 409, description = "external_id taken in this program, or the member was erased", body = ErrorBody),
        (status = 412, description = "The member changed since it was read", body = ErrorBody),
        (status = 428, description = "If-Match is missing", body = ErrorBody),
    ))]
pub async fn patch_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
    headers: axum::http::HeaderMap,
    super::error::ApiJson(body): super::error::ApiJson<PatchMember>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(&[Role::Admin, Role::Integration])?;
    let Some(tag) = headers.get(axum::http::header::IF_MATCH) else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "send If-Match with the ETag of GET /api/v1/members/{id}, so a change made since is not overwritten",
        ));
    };
    let expected = tag
        .to_str()
        .ok()
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| ApiError::bad_request("If-Match must be an ETag this API returned"))?;
    let version = lifecycle::update_profile(
        &state.store,
        &member_id,
        expected,
        lifecycle::ProfileInput {
            display_name: body.display_name,
            external_id: body.external_id,
            email: body.email,
            phone: body.phone,
            birthday: body.birthday,
        },
    )
    .await?;
    let member = state.store.get_member(&member_id).await?;
    let view = super::members::member_view(&state, &member).await?;
    let mut response = Json(view).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::ETAG, member_etag(version));
    Ok(response)
}
