//! A member's card lifecycle: ending a card and reissuing it (`storage::lifecycle`).

use super::ServiceError;
use crate::domain::{Pass, now_ms};
use crate::storage::Store;

/// Ends the member's card: both wallets show it void, its links stop working, the ledger
/// stays. Returns the ended pass and whether this call ended it (an ended card stays as it is).
#[tracing::instrument(skip_all, fields(member = %member_id), err(level = "warn"))]
pub async fn end_card(store: &Store, member_id: &str) -> Result<(Pass, bool), ServiceError> {
    let (pass, ended) = store.end_card(member_id, now_ms()).await?;
    if ended {
        tracing::info!(serial = %pass.serial_number, "card ended");
    }
    Ok((pass, ended))
}

/// Reissues the member's card (lost or shared): a new pass, barcode and tokens; the old pass
/// is voided. Returns the new pass; a retry with the same idempotency key returns the same one.
#[tracing::instrument(skip_all, fields(member = %member_id), err(level = "warn"))]
pub async fn reissue_card(
    store: &Store,
    member_id: &str,
    idempotency: Option<(&str, &str)>,
) -> Result<Pass, ServiceError> {
    let (pass, old) = store.reissue_card(member_id, now_ms(), idempotency).await?;
    tracing::info!(serial = %pass.serial_number, ended = ?old, "card reissued");
    Ok(pass)
}

/// Erases the member's personal data: the card ends, name, external id, contact details and
/// birthday go, devices and push tokens go; the ledger and the consent records stay under the
/// member's random id (`storage::erasure`).
#[tracing::instrument(skip_all, fields(member = %member_id), err(level = "warn"))]
pub async fn erase_member(
    store: &Store,
    member_id: &str,
) -> Result<crate::storage::Erasure, ServiceError> {
    let erased = store.erase_member(member_id, now_ms()).await?;
    tracing::info!(
        fields = erased.fields.len(),
        devices = erased.devices,
        scrubbed = erased.scrubbed,
        "member erased"
    );
    Ok(erased)
}

/// What a consent withdrawal covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdraw {
    /// Marketing only: no more messages; the membership goes on.
    Marketing,
    /// All processing: the member is erased.
    All,
}

/// A recorded withdrawal: the rows written, the unsent messages dropped, and for `All` the
/// erasure.
pub struct Withdrawal {
    pub recorded: Vec<crate::storage::ConsentRecord>,
    pub messages_dropped: u64,
    pub erasure: Option<crate::storage::Erasure>,
}

/// Records a withdrawal as new consent rows (the program's current policy version, `source`
/// and the text the customer saw or the caller's description), drops unsent marketing at once
/// and, for `All`, erases the member.
#[tracing::instrument(skip_all, fields(member = %member_id, ?scope), err(level = "warn"))]
pub async fn withdraw_consent(
    store: &Store,
    member_id: &str,
    scope: Withdraw,
    source: &str,
    text_shown: &str,
) -> Result<Withdrawal, ServiceError> {
    let member = store.get_member(member_id).await?;
    let settings = store.program_enrollment(&member.program_id).await?;
    let now = now_ms();
    let kinds: &[&str] = match scope {
        Withdraw::Marketing => &["marketing"],
        Withdraw::All => &["marketing", "data"],
    };
    let recorded: Vec<_> = kinds
        .iter()
        .map(|kind| crate::storage::ConsentRecord {
            kind: kind.to_string(),
            granted: false,
            policy_version: settings.policy_version.clone(),
            policy_url: settings.privacy_policy_url.clone(),
            text_shown: text_shown.to_string(),
            source: source.to_string(),
            recorded_at: now,
        })
        .collect();
    let messages_dropped = store.withdraw_consents(member_id, &recorded).await?;
    let erasure = match scope {
        Withdraw::Marketing => None,
        Withdraw::All => Some(erase_member(store, member_id).await?),
    };
    tracing::info!(messages_dropped, "consent withdrawn");
    Ok(Withdrawal {
        recorded,
        messages_dropped,
        erasure,
    })
}

/// A profile change as asked for: `None` leaves a field, `Some(None)` clears it (the name
/// cannot be cleared).
#[derive(Debug, Clone, Default)]
pub struct ProfileInput {
    pub display_name: Option<String>,
    pub external_id: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub phone: Option<Option<String>>,
    pub birthday: Option<Option<String>>,
}

/// Checks and normalises a profile change (e-mail lower-cased, phone digits with its `+`,
/// birthday `YYYY-MM-DD`) and applies it if the profile is still at `expected`; the card follows
/// a new name or external id. Returns the new version.
#[tracing::instrument(skip_all, fields(member = %member_id), err(level = "warn"))]
pub async fn update_profile(
    store: &Store,
    member_id: &str,
    expected: i64,
    input: ProfileInput,
) -> Result<i64, ServiceError> {
    use crate::domain::enrollment::{normalize_email, normalize_phone};
    let mut c = crate::domain::Checker::default();
    if let Some(name) = &input.display_name {
        crate::domain::check_text(&mut c, "display_name", name, 200);
    }
    if let Some(Some(ext)) = &input.external_id {
        crate::domain::check_text(&mut c, "external_id", ext, 200);
    }
    let email = input.email.map(|e| {
        e.and_then(|raw| {
            let n = normalize_email(&raw);
            c.check(n.is_some(), "email", || {
                format!("email must be an e-mail address such as ada@example.com, got {raw:?}")
            });
            n
        })
    });
    let phone = input.phone.map(|p| {
        p.and_then(|raw| {
            let n = normalize_phone(&raw);
            c.check(n.is_some(), "phone", || {
                format!("phone must be a phone number of 7 to 15 digits, got {raw:?}")
            });
            n
        })
    });
    let format = time::macros::format_description!("[year]-[month]-[day]");
    if let Some(Some(b)) = &input.birthday {
        c.check(time::Date::parse(b, &format).is_ok(), "birthday", || {
            format!("birthday must be a date as YYYY-MM-DD, got {b:?}")
        });
    }
    c.finish()?;
    let change = crate::storage::ProfileChange {
        display_name: input.display_name,
        external_id: input.external_id,
        email,
        phone,
        birthday: input.birthday,
    };
    Ok(store
        .update_profile(member_id, expected, &change, now_ms())
        .await?)
}
