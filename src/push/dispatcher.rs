//! The push dispatcher: turns committed outbox rows into APNs pushes (`apple-wallet.md` §6.3).
//!
//! After commit only: ledger writes put an outbox row in their own transaction, so a change
//! that rolled back is never pushed, and one that committed is pushed even across a restart
//! (rows are deleted only once handled). Rows due together are coalesced per member: each
//! device gets one push however many changes it covers. 410 and `BadDeviceToken` remove the
//! registration; 429, 5xx and silence reschedule the row with exponential backoff and jitter.

use crate::supervisor::Beat;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use anyhow::Context;

use super::apns::{ApnsClient, PRODUCTION_URL, ProviderToken, PushResult};
use crate::config::PushConfig;
use crate::domain::now_ms;
use crate::passes::apple::Signers;
use crate::passes::apple::signer::load_certificate;
use crate::storage::{DueChange, PushSettlement, PushTarget, StorageError, Store};

/// Outbox rows taken per batch.
const BATCH: i64 = 2000;
/// Pushes in flight on one connection.
const CONCURRENCY: usize = 256;
/// How long the fetcher reads past its cursor before it lets the pipeline drain and starts again
/// from the oldest due row.
const MAX_AHEAD: Duration = Duration::from_secs(1);
/// Batches that may wait to be settled.
const SETTLE_QUEUE: usize = 16;
/// Give up on a row after this many failed attempts (about a day with 1 s base backoff).
const MAX_ATTEMPTS: i64 = 18;

/// Due outbox rows and the pushes they call for, on their way through the pipeline.
#[derive(Default)]
struct Batch {
    /// How many outbox rows the batch holds, and the last one's id (the fetcher's cursor).
    rows: usize,
    last_id: String,
    by_member: BTreeMap<String, Vec<DueChange>>,
    targets: Vec<(ApnsClient, PushTarget)>,
    /// Rows already decided on (changes with no member to push for).
    settlement: PushSettlement,
}

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

    /// Runs until aborted, as a three-stage pipeline so the connection never idles while the
    /// database works: the fetcher reads batch n+1 while the pusher sends batch n and the
    /// settler writes back batch n-1.
    ///
    /// Rows stay in the outbox until settled, so the fetcher reads past a cursor (the last id it
    /// took) while batches are in flight, and starts again from the oldest due row only when
    /// every batch it took has been settled. Retries and late commits behind the cursor wait about
    /// `MAX_AHEAD` at most.
    pub async fn run(&self, beat: Beat) {
        let wake = self.store.changes();
        let (to_push, mut pushing) = mpsc::channel::<Batch>(1);
        let (to_settle, mut settling) = mpsc::channel::<PushSettlement>(SETTLE_QUEUE);
        let in_flight = AtomicUsize::new(0);
        let drained = Notify::new();

        let fetcher = async {
            let mut cursor = String::new();
            let mut since_reset = Instant::now();
            loop {
                if in_flight.load(Ordering::Acquire) == 0 {
                    cursor.clear();
                    since_reset = Instant::now();
                }
                let fetched = self.fetch(&cursor).await;
                if fetched.is_ok() {
                    beat.ok();
                }
                match fetched {
                    Ok(Some(batch)) => {
                        let full = batch.rows as i64 >= BATCH;
                        cursor = batch.last_id.clone();
                        in_flight.fetch_add(1, Ordering::AcqRel);
                        if to_push.send(batch).await.is_err() {
                            return;
                        }
                        if full && since_reset.elapsed() < MAX_AHEAD {
                            continue; // a full batch: there may be more right away
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "reading the push outbox failed; retrying");
                        tokio::time::sleep(self.poll).await;
                        continue;
                    }
                }
                if since_reset.elapsed() >= MAX_AHEAD {
                    while in_flight.load(Ordering::Acquire) > 0 {
                        drained.notified().await;
                    }
                    continue;
                }
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = drained.notified() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
        };
        let pusher = async {
            while let Some(batch) = pushing.recv().await {
                let settlement = self.push(batch).await;
                if to_settle.send(settlement).await.is_err() {
                    return;
                }
            }
        };
        let settler = async {
            while let Some(mut settlement) = settling.recv().await {
                // Group commit: whatever else has been pushed meanwhile goes in the same
                // transaction, so small batches under a trickle of changes cost one commit.
                let mut batches = 1;
                while let Ok(more) = settling.try_recv() {
                    settlement.absorb(more);
                    batches += 1;
                }
                // On failure the rows stay in the outbox and are pushed again once the
                // pipeline drains: at least once, never lost.
                if let Err(e) = self.store.settle_pushes(&settlement, now_ms()).await {
                    tracing::error!(error = %e, "recording push results failed; they will be pushed again");
                }
                in_flight.fetch_sub(batches, Ordering::AcqRel);
                drained.notify_one();
            }
        };
        tokio::join!(fetcher, pusher, settler);
    }

    /// The next batch of due rows after `cursor` and the devices to push for them.
    async fn fetch(&self, cursor: &str) -> Result<Option<Batch>, StorageError> {
        let now = now_ms();
        let (due, targets) = self.store.due_pushes(now, cursor, BATCH).await?;
        let Some(last) = due.last() else {
            return Ok(None);
        };
        let last_id = last.id.clone();
        let mut batch = Batch {
            rows: due.len(),
            last_id,
            ..Batch::default()
        };
        for row in due {
            match row.member_id.clone() {
                Some(m) => batch.by_member.entry(m).or_default().push(row),
                None => batch.settlement.finished.push(row.id),
            }
        }
        // One push per device however many of the member's changes are due: coalescing.
        for target in targets {
            if let Some(client) = self
                .client_for(&target.pass_type_identifier, &target.member_id)
                .await
            {
                batch.targets.push((client, target));
            }
        }
        Ok(Some(batch))
    }

    /// Pushes a batch, `CONCURRENCY` requests in flight on the connection, and decides what
    /// becomes of each of its rows.
    async fn push(&self, batch: Batch) -> PushSettlement {
        let Batch {
            by_member,
            targets,
            mut settlement,
            ..
        } = batch;
        let queue = Arc::new(Mutex::new(VecDeque::from(targets)));
        let mut workers = JoinSet::new();
        for _ in 0..CONCURRENCY.min(queue.lock().expect("push queue poisoned").len()) {
            let queue = queue.clone();
            workers.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let next = queue.lock().expect("push queue poisoned").pop_front();
                    let Some((client, target)) = next else {
                        return done;
                    };
                    let result = client
                        .push(&target.pass_type_identifier, &target.push_token)
                        .await;
                    done.push((target, result));
                }
            });
        }
        let mut retry: HashMap<String, String> = HashMap::new();
        while let Some(done) = workers.join_next().await {
            for (target, result) in done.expect("push worker panicked") {
                let label = match &result {
                    PushResult::Delivered => "delivered".to_string(),
                    PushResult::TokenGone(r) => format!("token gone: {r}"),
                    PushResult::Retry(r) => format!("retry: {r}"),
                    PushResult::Rejected { status, reason } => {
                        format!("rejected: {status} {reason}")
                    }
                };
                let metrics = self.store.metrics();
                match &result {
                    PushResult::Delivered => metrics.push("sent", ""),
                    PushResult::TokenGone(r) => metrics.push("failed", r),
                    PushResult::Retry(r) => metrics.push("retrying", r),
                    PushResult::Rejected { reason, .. } => metrics.push("failed", reason),
                }
                let (device, serial) = (target.device_library_identifier, target.serial_number);
                match result {
                    PushResult::TokenGone(_) => {
                        tracing::info!(
                            device,
                            serial,
                            "APNs says the token is gone; unregistering"
                        );
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
        }
        for (member, rows) in by_member {
            let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(0);
            match retry.remove(&member) {
                Some(why) if attempts + 1 < MAX_ATTEMPTS => {
                    let at = now_ms() + backoff_ms(self.retry_base_ms, attempts);
                    settlement
                        .retries
                        .extend(rows.into_iter().map(|r| (r.id, at, why.clone())));
                }
                Some(why) => {
                    tracing::error!(why, "giving up on a push after {MAX_ATTEMPTS} attempts");
                    settlement.finished.extend(rows.into_iter().map(|r| r.id));
                }
                None => settlement.finished.extend(rows.into_iter().map(|r| r.id)),
            }
        }
        settlement
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
pub fn backoff_ms(base: u64, attempts: i64) -> i64 {
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
