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
/// is voided. Returns the new pass.
#[tracing::instrument(skip_all, fields(member = %member_id), err(level = "warn"))]
pub async fn reissue_card(store: &Store, member_id: &str) -> Result<Pass, ServiceError> {
    let (pass, old) = store.reissue_card(member_id, now_ms()).await?;
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
