//! When Wallet last downloaded each pass ("pushed but never fetched" in the admin API).
//!
//! A device fetch is a read; recording it with a durable write per request would make every
//! `GET pass` cost a commit (an fsync on SQLite). Fetch times are kept in memory and written in
//! one transaction per flush; the admin API merges what is not yet written, so this process
//! shows them at once. A crash loses at most one flush interval of fetch times, never a pass.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::storage::{StorageError, Store};

#[derive(Default)]
pub struct FetchLog {
    pending: Mutex<HashMap<String, i64>>,
}

impl FetchLog {
    pub fn record(&self, serial: &str, at: i64) {
        let mut pending = self.pending.lock().expect("fetch log poisoned");
        match pending.get_mut(serial) {
            Some(t) => *t = (*t).max(at),
            None => {
                pending.insert(serial.to_string(), at);
            }
        }
    }

    /// The newest fetch of `serial` not yet written.
    pub fn pending(&self, serial: &str) -> Option<i64> {
        self.pending
            .lock()
            .expect("fetch log poisoned")
            .get(serial)
            .copied()
    }

    /// Writes what is pending; on failure keeps it for the next flush. Returns how many passes
    /// it wrote.
    pub async fn flush(&self, store: &Store) -> Result<usize, StorageError> {
        let batch: Vec<(String, i64)> =
            std::mem::take(&mut *self.pending.lock().expect("fetch log poisoned"))
                .into_iter()
                .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.mark_fetched(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                for (serial, at) in &batch {
                    self.record(serial, *at);
                }
                Err(e)
            }
        }
    }
}
