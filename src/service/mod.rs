//! The service layer: every write the HTTP handlers, the staff pages, the CLI and the jobs make
//! goes through here, and from here to `storage`. Layering: handler -> service -> storage.
//!
//! - `cards`: templates, members and signed passes (holds the signers and image caches);
//! - `programs`: loyalty rules and names, which every holder's card shows;
//! - `points`: postings to the ledger, with the actor's limits;
//! - `lifecycle`: ending and reissuing a member's card.
//!
//! Every change a card shows goes through one storage step (`storage::changes`) in the change's
//! own transaction: the pass version moves forward, an outbox row is written for the push
//! dispatcher and the member is queued for Google.

pub mod cards;
pub mod lifecycle;
pub mod points;
pub mod programs;

use crate::domain::Invalid;
use crate::passes::apple::SignError;
use crate::passes::apple::bundle::BundleError;
use crate::storage::StorageError;

/// The service layer's one error type.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
}
