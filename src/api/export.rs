//! The right of access: everything held about a member, as one JSON document.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::enrollment::ConsentView;
use super::error::ApiError;
use super::views::{DeviceView, EntryView, ErrorBody};
use crate::app::AppState;
use crate::domain::now_ms;
use crate::storage::Role;

/// Everything held about a member. Install links and card-link e-mails are not stored, so
/// they are not listed; messages are those sent to the Google card.
#[derive(Serialize, ToSchema)]
pub struct MemberExport {
    pub exported_at: i64,
    pub profile: Profile,
    /// Every consent answer, oldest first, with the exact text shown.
    pub consents: Vec<ConsentView>,
    /// Every ledger entry, oldest first.
    pub ledger: Vec<EntryView>,
    /// Every card issued (ended ones too) with the devices holding it.
    pub cards: Vec<CardExport>,
    /// The Google Wallet object, when one was written.
    pub google: Option<GoogleExport>,
    /// Messages sent or queued to the member's Google card.
    pub messages: Vec<MessageExport>,
}

#[derive(Serialize, ToSchema)]
pub struct Profile {
    pub id: String,
    pub program_id: String,
    pub program_name: String,
    pub display_name: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub birthday: Option<String>,
    pub barcode: String,
    pub points: i64,
    pub tier: Option<String>,
    pub created_at: i64,
    pub erased_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct CardExport {
    pub serial_number: String,
    pub pass_type_identifier: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    pub last_fetched_at: Option<i64>,
    pub devices: Vec<DeviceView>,
}

#[derive(Serialize, ToSchema)]
pub struct GoogleExport {
    pub object_id: String,
    pub synced_at: i64,
    /// Google's save and delete reports: `save` or `del`.
    pub events: Vec<WalletEventExport>,
}

#[derive(Serialize, ToSchema)]
pub struct WalletEventExport {
    pub event_type: String,
    pub received_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct MessageExport {
    pub message_id: String,
    pub header: String,
    pub body: String,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

/// Everything held about a member (the right of access): profile with contact details,
/// consents with their texts, ledger entries, cards and devices, messages sent to the card.
#[utoipa::path(get, path = "/api/v1/members/{member_id}/export", tag = "members",
    params(("member_id" = String, Path)),
    responses((status = 200, description = "OK", body = MemberExport), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody)))]
pub async fn export_member(
    State(state): State<AppState>,
    caller: Caller,
    Path(member_id): Path<String>,
) -> Result<Json<MemberExport>, ApiError> {
    caller.require(&[Role::Admin, Role::Integration])?;
    let store = &state.store;
    let member = store.get_member(&member_id).await?;
    let program = store.get_program(&member.program_id).await?;
    let (email, phone, birthday) = store.member_contact(&member_id).await?;
    let consents = store
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
    let mut ledger = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_entries(&member_id, after, 1000).await?;
        let more = page.len() == 1000;
        after = page.last().map(|e| (e.created_at, e.id.clone()));
        ledger.extend(page.iter().map(EntryView::from));
        if !more {
            break;
        }
    }
    let mut cards = Vec::new();
    for p in store.member_passes(&member_id).await? {
        let devices = store
            .registrations(&p.serial_number)
            .await?
            .into_iter()
            .map(|r| DeviceView {
                device_library_identifier: r.device_library_identifier,
                registered_at: r.created_at,
                last_push_at: r.last_push_at,
                last_push_result: r.last_push_result,
            })
            .collect();
        cards.push(CardExport {
            last_fetched_at: p
                .last_fetched_at
                .max(state.fetches.pending(&p.serial_number)),
            serial_number: p.serial_number,
            pass_type_identifier: p.pass_type_identifier,
            created_at: p.created_at,
            updated_at: p.updated_at,
            ended_at: p.ended_at,
            devices,
        });
    }
    let google = match store.google_object(&member_id).await? {
        Some(o) => Some(GoogleExport {
            object_id: o.object_id,
            synced_at: o.synced_at,
            events: store
                .member_wallet_events(&member_id)
                .await?
                .into_iter()
                .map(|e| WalletEventExport {
                    event_type: e.event_type,
                    received_at: e.received_at,
                })
                .collect(),
        }),
        None => None,
    };
    let messages = store
        .member_messages(&member_id)
        .await?
        .into_iter()
        .map(|m| MessageExport {
            message_id: m.message_id,
            header: m.header,
            body: m.body,
            created_at: m.created_at,
            sent_at: m.sent_at,
        })
        .collect();
    Ok(Json(MemberExport {
        exported_at: now_ms(),
        profile: Profile {
            tier: program
                .rules
                .tier_name(member.tier.as_deref())
                .map(String::from),
            erased_at: store.member_erased_at(&member_id).await?,
            id: member.id,
            program_id: member.program_id,
            program_name: program.name,
            display_name: member.display_name,
            external_id: member.external_id,
            email,
            phone,
            birthday,
            barcode: member.barcode,
            points: member.points,
            created_at: member.created_at,
        },
        consents,
        ledger,
        cards,
        google,
        messages,
    }))
}
