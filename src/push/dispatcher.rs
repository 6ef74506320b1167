//! The push dispatcher: turns committed outbox rows into APNs pushes (`apple-wallet.md` §6.3).
//!
//! After commit only: ledger writes put an outbox row in their own transaction, so a change
//! that rolled back is never pushed, and one that committed is pushed even across a restart
//! (rows are deleted only once handled). Rows due together are coalesced per member: each
//! device gets one push however many changes it covers. 410 and `BadDeviceToken` remove the
//! registration; 429, 5xx and silence reschedule the row with exponential backoff and jitter.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use anyhow::Context;

use super::apns::{ApnsClient, PRODUCTION_URL, ProviderToken, PushResult};
use crate::config::PushConfig;
use crate::domain::now_ms;
use crate::passes::apple::Signers;
use crate::passes::apple::signer::load_certificate;
use crate::storage::{DueChange, PushSettlement, StorageError, Store};

/// Rows taken per pass.
const BATCH: i64 = 2000;
/// Give up on a row after this many failed attempts (about a day with 1 s base backoff).
const MAX_ATTEMPTS: i64 = 18;

pub struct Dispatcher {
    store: Store,
    signers: Arc<Signers>,
    base_url: String,
    extra_root: Option<openssl::x509::X509>,
    retry_base_ms: u64,
    poll: Duration,
    /// One client (one HTTP/2 connection) per pass type identity.
    clients: Mutex<HashMap<String, ApnsClient>>,
    /// Token auth for the pass types of one team: `(team id, client)`.
    token_client: Option<(String, ApnsClient)>,
}

impl Dispatcher {
    /// The dispatcher the configuration asks for, or `None` when pushing is off.
    pub fn from_config(
        store: Store,
        signers: Arc<Signers>,
        config: &PushConfig,
    ) -> anyhow::Result<Option<Dispatcher>> {
        let enabled = config
            .enabled
            .unwrap_or(!signers.is_dev() || config.apns_url.is_some());
        if !enabled {
            return Ok(None);
        }
        let extra_root = config
            .apns_root_certificate
            .as_deref()
            .map(load_certificate)
            .transpose()?;
        let base_url = config
            .apns_url
            .clone()
            .unwrap_or_else(|| PRODUCTION_URL.into());
        let token_client = match (&config.apns_key, &config.apns_key_id, &config.apns_team_id) {
            (Some(key), Some(key_id), Some(team)) => {
                let pem = std::fs::read(key)
                    .with_context(|| format!("reading the APNs key {}", key.display()))?;
                let token = ProviderToken::new(&pem, key_id, team)?;
                Some((
                    team.clone(),
                    ApnsClient::with_token(&base_url, token, extra_root.as_ref())?,
                ))
            }
            _ => None,
        };
        Ok(Some(Dispatcher {
            store,
            signers,
            base_url,
            extra_root,
            retry_base_ms: config.retry_base_ms.max(1),
            poll: Duration::from_millis(config.poll_interval_ms.max(10)),
            clients: Mutex::default(),
            token_client,
        }))
    }

    /// Runs until aborted: wakes on every committed change, and polls for retries.
    pub async fn run(self) {
        let wake = self.store.changes();
        loop {
            match self.run_once().await {
                // A full batch: there may be more right away.
                Ok(n) if n as i64 >= BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "push dispatcher pass failed; retrying"),
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Delivers what is due now; returns how many outbox rows it handled. Reads the batch's
    /// targets in one query, pushes concurrently over the HTTP/2 connection, and writes every
    /// outcome back in one transaction.
    pub async fn run_once(&self) -> Result<usize, StorageError> {
        let now = now_ms();
        let due = self.store.due_outbox(now, BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let targets = self.store.push_targets(now, BATCH).await?;
        let mut rows: BTreeMap<String, Vec<DueChange>> = BTreeMap::new();
        let mut settlement = PushSettlement::default();
        for row in &due {
            match &row.member_id {
                Some(m) => rows.entry(m.clone()).or_default().push(row.clone()),
                None => settlement.finished.push(row.id.clone()),
            }
        }
        // One push per device however many of the member's changes are due: coalescing.
        let mut work = JoinSet::new();
        for target in targets
            .into_iter()
            .filter(|t| rows.contains_key(&t.member_id))
        {
            let Some(client) = self
                .client_for(&target.pass_type_identifier, &target.member_id)
                .await
            else {
                continue;
            };
            work.spawn(async move {
                let result = client
                    .push(&target.pass_type_identifier, &target.push_token)
                    .await;
                (target, result)
            });
        }
        let mut retry: HashMap<String, String> = HashMap::new();
        while let Some(done) = work.join_next().await {
            let (target, result) = done.expect("push task panicked");
            let label = match &result {
                PushResult::Delivered => "delivered".to_string(),
                PushResult::TokenGone(r) => format!("token gone: {r}"),
                PushResult::Retry(r) => format!("retry: {r}"),
                PushResult::Rejected { status, reason } => format!("rejected: {status} {reason}"),
            };
            let (device, serial) = (target.device_library_identifier, target.serial_number);
            match result {
                PushResult::TokenGone(_) => {
                    tracing::info!(device, serial, "APNs says the token is gone; unregistering");
                    settlement.gone.push((device, serial));
                    continue;
                }
                PushResult::Retry(why) => {
                    retry.insert(target.member_id, why);
                }
                PushResult::Rejected { status, reason } => {
                    tracing::error!(status, reason, topic = %target.pass_type_identifier, "APNs refused the push: check the certificate and topic");
                }
                PushResult::Delivered => {}
            }
            settlement.results.push((device, serial, label));
        }
        for (member, member_rows) in rows {
            let attempts = member_rows.iter().map(|r| r.attempts).max().unwrap_or(0);
            match retry.remove(&member) {
                Some(why) if attempts + 1 < MAX_ATTEMPTS => {
                    let at = now_ms() + backoff_ms(self.retry_base_ms, attempts);
                    settlement
                        .retries
                        .extend(member_rows.into_iter().map(|r| (r.id, at, why.clone())));
                }
                Some(why) => {
                    tracing::error!(why, "giving up on a push after {MAX_ATTEMPTS} attempts");
                    settlement
                        .finished
                        .extend(member_rows.into_iter().map(|r| r.id));
                }
                None => settlement
                    .finished
                    .extend(member_rows.into_iter().map(|r| r.id)),
            }
        }
        self.store.settle_pushes(&settlement, now_ms()).await?;
        Ok(due.len())
    }

    async fn client_for(&self, pass_type: &str, member: &str) -> Option<ApnsClient> {
        if let Some(c) = self
            .clients
            .lock()
            .expect("client map poisoned")
            .get(pass_type)
        {
            return Some(c.clone());
        }
        let program = match self.store.get_member(member).await {
            Ok(m) => self.store.get_program(&m.program_id).await.ok()?,
            Err(_) => return None,
        };
        if let Some((team, client)) = &self.token_client
            && *team == program.team_identifier
        {
            return Some(client.clone());
        }
        let identity = match self
            .signers
            .identity_for(pass_type, &program.team_identifier)
        {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, pass_type, "no identity to push with");
                return None;
            }
        };
        match ApnsClient::with_certificate(
            &self.base_url,
            identity.certificate(),
            identity.private_key(),
            self.extra_root.as_ref(),
        ) {
            Ok(c) => {
                self.clients
                    .lock()
                    .expect("client map poisoned")
                    .insert(pass_type.to_string(), c.clone());
                Some(c)
            }
            Err(e) => {
                tracing::error!(error = %e, "building the APNs client failed");
                None
            }
        }
    }
}

/// `base * 2^attempts`, at most 10 minutes, plus up to 50% jitter so retries spread out.
fn backoff_ms(base: u64, attempts: i64) -> i64 {
    let exp = base
        .saturating_mul(1u64 << attempts.clamp(0, 20))
        .min(600_000);
    let mut byte = [0u8; 2];
    openssl::rand::rand_bytes(&mut byte).expect("CSPRNG");
    let jitter = exp / 2 * u16::from_le_bytes(byte) as u64 / u16::MAX as u64;
    (exp + jitter) as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_and_is_capped() {
        let b0 = super::backoff_ms(1000, 0);
        assert!((1000..=1500).contains(&b0), "{b0}");
        let b3 = super::backoff_ms(1000, 3);
        assert!((8000..=12000).contains(&b3), "{b3}");
        assert!(super::backoff_ms(1000, 40) <= 900_000);
    }
}
