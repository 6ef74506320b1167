//! Postings to the ledger by an API key, a staff account or the system. The actor's limits are
//! checked by the ledger inside the posting's transaction, after a retry of a recorded
//! idempotency key has been replayed, so racing requests cannot pass a limit together and a
//! retry is never refused.

use sha2::{Digest, Sha256};

use crate::domain::now_ms;
use crate::ledger::{Idempotency, Operation, Origin, Outcome};
use crate::storage::{Actor, StorageError, Store};

/// A retryable request's key, scoped to `scope` (an API key id or `staff:<id>`), with a hash of
/// the request as parsed (`canonical`), so formatting differences are not a different request.
pub fn idempotency(scope: &str, key: &str, canonical: &serde_json::Value) -> Idempotency {
    let text = serde_json::to_string(canonical).expect("JSON serialises");
    Idempotency {
        api_key_id: scope.to_string(),
        key: key.to_string(),
        request_hash: data_encoding::HEXLOWER.encode(&Sha256::digest(text.as_bytes())),
    }
}

/// Posts `op` now. Returns the outcome and whether it was a replay of an earlier request.
pub async fn post(
    store: &Store,
    member_id: &str,
    op: &Operation,
    origin: &Origin,
    by: Actor<'_>,
    idempotency: Option<&Idempotency>,
) -> Result<(Outcome, bool), StorageError> {
    store
        .post_by(member_id, op, origin, by, idempotency, now_ms())
        .await
}
