//! Background work: expiring lapsed points, forgetting old idempotency keys, and publishing
//! template versions to their holders.

use std::time::Duration;

use crate::app::AppState;
use crate::domain::now_ms;
use crate::supervisor::Beat;

/// Members handled per expiry pass; the loop runs again at once while there is more.
const EXPIRY_BATCH: i64 = 500;

/// Runs until the task is aborted. Errors are logged and retried on the next tick.
pub async fn ledger_loop(state: AppState, beat: Beat) {
    let every = Duration::from_secs(state.config.ledger.expiry_interval_seconds.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if run_once(&state).await.is_some() {
            beat.ok();
        }
    }
}

/// Writes pass-download times and buffered audit rows (`web::audit::Pending`) every second
/// (see `webservice::fetches`), then drops the
/// registrations of ended cards whose devices have the voided pass (`card_ends`, a claimed job).
pub async fn fetch_log_loop(state: AppState, beat: Beat) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let flushed = match state.fetches.flush(&state.store).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "recording pass downloads failed; retrying");
                false
            }
        };
        let audited = match state.audit.flush(&state.store).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "writing buffered audit rows failed; retrying");
                state.store.metrics().audit_failed();
                false
            }
        };
        let viewed = match state.join_views.flush(&state.store).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "recording join-page views failed; retrying");
                false
            }
        };
        let swept = drop_ended_registrations(&state).await;
        if flushed && audited && viewed && swept {
            beat.ok();
        }
    }
}

/// Ended passes handled per sweep; the next second takes the rest.
const ENDED_BATCH: i64 = 500;

/// One sweep of ended cards' registrations under the `card_ends` lease; `false` when it failed.
async fn drop_ended_registrations(state: &AppState) -> bool {
    let now = now_ms();
    match state.store.claim_job("card_ends", now).await {
        Ok(true) => {}
        Ok(false) => return true,
        Err(e) => {
            tracing::warn!(error = %e, "claiming the ended-card sweep failed; retrying");
            return false;
        }
    }
    let days = i64::from(state.config.push.ended_registration_days);
    match state
        .store
        .drop_ended_registrations(now - days * 86_400_000, ENDED_BATCH)
        .await
    {
        Ok(0) => true,
        Ok(n) => {
            tracing::info!(registrations = n, "dropped ended cards' registrations");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "dropping ended cards' registrations failed; retrying");
            false
        }
    }
}

/// Hands freed heap back to the system every 10 s (`memory::release_free`), so the server
/// returns to its idle size after a burst (a publish to every holder) instead of keeping it.
pub async fn memory_loop(beat: Beat) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        crate::memory::release_free();
        beat.ok();
    }
}

/// Checkpoints the SQLite WAL every second beside the writers (`Store::checkpoint`), in a
/// worker of its own: a long checkpoint delays nothing else.
pub async fn checkpoint_loop(state: AppState, beat: Beat) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match state.store.checkpoint().await {
            Ok(()) => beat.ok(),
            Err(e) => tracing::warn!(error = %e, "checkpointing the database failed; retrying"),
        }
    }
}

/// Relays other instances' changes to this one's workers (PostgreSQL `LISTEN`, see
/// `storage::notify`). Returns when the connection fails, to be restarted by the supervisor.
pub async fn notifications_loop(state: AppState, beat: Beat) {
    if let Err(e) = state.store.listen_for_other_instances(|| beat.ok()).await {
        tracing::warn!(error = %e, "listening for other instances' changes failed; reconnecting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Holders a publish step marks changed in one transaction.
const PUBLISH_BATCH: i64 = 250;

/// Runs publish jobs to the end, one batch per transaction. A job's progress lives in its row,
/// so after a restart the loop resumes each running job where it stopped.
pub async fn publish_loop(state: AppState, beat: Beat) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        if publish_once(&state).await.is_some() {
            beat.ok();
        }
    }
}

/// Runs every running publish job to completion; returns the holders handled, or `None` when
/// a step failed (logged; `/readyz` then shows no fresh successful run).
pub async fn publish_once(state: &AppState) -> Option<i64> {
    let jobs = match state.store.running_publish_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::error!(error = %e, "reading publish jobs failed; retrying");
            return None;
        }
    };
    let mut handled = 0;
    let mut failed = false;
    for job in jobs {
        let mut done = job.done;
        loop {
            match state
                .store
                .publish_step(&job.id, PUBLISH_BATCH, now_ms())
                .await
            {
                Ok(after) if after.status == crate::storage::PUBLISH_BUSY => break,
                Ok(after) => {
                    handled += after.done - done;
                    done = after.done;
                    if after.status != "running" {
                        tracing::info!(job = %job.id, template = %job.template_id, version = job.version, holders = after.done, "publish finished");
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, job = %job.id, "a publish step failed; retrying");
                    failed = true;
                    break;
                }
            }
        }
    }
    (!failed).then_some(handled)
}

/// One pass of every ledger job; returns the number of members whose points expired, or
/// `None` when a job failed (logged). With several instances on one PostgreSQL database only
/// the one holding the `ledger` lease runs it (each expiry also locks its member, so even two
/// passes would expire a lot once).
pub async fn run_once(state: &AppState) -> Option<usize> {
    match state.store.claim_job("ledger", now_ms()).await {
        Ok(true) => {}
        Ok(false) => return Some(0),
        Err(e) => {
            tracing::error!(error = %e, "claiming the ledger jobs failed; retrying next tick");
            return None;
        }
    }
    let mut expired = 0;
    let mut failed = false;
    loop {
        match state.store.expire_due(now_ms(), EXPIRY_BATCH).await {
            Ok(0) => break,
            Ok(n) => {
                expired += n;
                if (n as i64) < EXPIRY_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "expiring points failed; retrying next tick");
                failed = true;
                break;
            }
        }
    }
    if expired > 0 {
        tracing::info!(members = expired, "expired lapsed points");
    }
    if let Err(e) = state.store.purge_throttles(now_ms()).await {
        tracing::error!(error = %e, "purging spent throttle state failed");
        failed = true;
    }
    // Holds open past their expiry release their points (each in its member's transaction, so
    // a capture racing the expiry resolves the hold once).
    loop {
        match state.store.expire_holds(now_ms(), EXPIRY_BATCH).await {
            Ok(n) if (n as i64) < EXPIRY_BATCH => break,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "releasing expired holds failed; retrying next tick");
                failed = true;
                break;
            }
        }
    }
    if let Err(e) = state.store.purge_pending_joins(now_ms()).await {
        tracing::error!(error = %e, "purging expired join confirmations failed");
        failed = true;
    }
    let retention = state.config.ledger.idempotency_retention_hours as i64 * 3_600_000;
    if let Err(e) = state
        .store
        .purge_sent_google_messages(now_ms() - retention)
        .await
    {
        tracing::error!(error = %e, "purging sent Google messages failed");
        failed = true;
    }
    if let Err(e) = state
        .store
        .purge_idempotency_keys(now_ms() - retention)
        .await
    {
        tracing::error!(error = %e, "purging old idempotency keys failed");
        failed = true;
    }
    (!failed).then_some(expired)
}

/// Members erased per round of the retention job; the next round takes the rest.
const RETENTION_BATCH: i64 = 200;

/// What one round of the retention job did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRound {
    /// Members erased for inactivity.
    pub erased: Vec<String>,
    pub logs: crate::storage::LogPurge,
    /// Events deleted past `events.retention_days`.
    pub events: u64,
}

/// Runs the retention job every `retention.interval_seconds` until aborted.
pub async fn retention_loop(state: AppState, beat: Beat) {
    let every = Duration::from_secs(state.config.retention.interval_seconds.max(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if retention_once(&state, now_ms()).await.is_some() {
            beat.ok();
        }
    }
}

/// One round of the retention job as of `now`, under the `retention` lease (one instance at a
/// time): erases up to `RETENTION_BATCH` members inactive past their program's retention (each
/// erasure is the one `service::lifecycle::erase_member` does, recorded in the audit log with
/// the job as its actor), then deletes logs older than `retention.log_days`. `None` when a step
/// failed (logged); a member whose erasure failed is tried again next round.
pub async fn retention_once(state: &AppState, now: i64) -> Option<RetentionRound> {
    match state.store.claim_job("retention", now).await {
        Ok(true) => {}
        Ok(false) => return Some(RetentionRound::default()),
        Err(e) => {
            tracing::warn!(error = %e, "claiming the retention job failed; retrying");
            return None;
        }
    }
    let mut round = RetentionRound::default();
    let mut failed = false;
    let search = match state.store.any_retention().await {
        Ok(true) => state.store.inactive_members(now, RETENTION_BATCH).await,
        Ok(false) => Ok(Vec::new()),
        Err(e) => Err(e),
    };
    match search {
        Ok(members) => {
            for id in members {
                match crate::service::lifecycle::erase_member(&state.store, &id).await {
                    Ok(_) => {
                        let entry = crate::storage::AuditEntry {
                            actor_kind: "job".into(),
                            actor_id: "retention".into(),
                            actor_label: "retention job".into(),
                            action: "erase inactive member".into(),
                            target_kind: Some("member".into()),
                            target_id: Some(id.clone()),
                            status: 200,
                            is_write: true,
                            members: vec![id.clone()],
                            ..Default::default()
                        };
                        if let Err(e) = state.store.append_audit(&entry).await {
                            tracing::error!(error = %e, "could not write the audit log");
                            state.store.metrics().audit_failed();
                        }
                        round.erased.push(id);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, member = %id, "erasing an inactive member failed");
                        failed = true;
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "finding inactive members failed; retrying");
            failed = true;
        }
    }
    if !round.erased.is_empty() {
        tracing::info!(members = round.erased.len(), "erased inactive members");
    }
    let before = now - i64::from(state.config.retention.log_days) * 86_400_000;
    match state.store.purge_logs(before, now).await {
        Ok(logs) => round.logs = logs,
        Err(e) => {
            tracing::warn!(error = %e, "deleting old logs failed; retrying");
            failed = true;
        }
    }
    let before = now - i64::from(state.config.events.retention_days) * 86_400_000;
    loop {
        match state.store.purge_events(before, 5_000).await {
            Ok(n) => {
                round.events += n;
                if n < 5_000 {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "deleting old events failed; retrying");
                failed = true;
                break;
            }
        }
    }
    (!failed).then_some(round)
}

/// How often the dashboard's figures are recomputed.
const COCKPIT_EVERY: Duration = Duration::from_secs(60);
/// Back-filled days per round of the cockpit job (a program's history, the first time).
const COCKPIT_BACKFILL: i64 = 62;

/// Keeps the dashboard's daily figures (`storage::cockpit`) up to date, every minute.
pub async fn cockpit_loop(state: AppState, beat: Beat) {
    let mut tick = tokio::time::interval(COCKPIT_EVERY);
    loop {
        tick.tick().await;
        if cockpit_once(&state.store, now_ms()).await.is_some() {
            beat.ok();
        }
    }
}

/// One round of the cockpit job as of `now`, under the `cockpit` lease (one instance at a
/// time): recomputes today's and yesterday's figures of every program from the raw tables
/// (so a commit that landed after midnight with an earlier time still counts; the 7/30/90-day
/// windows and tiers, which read 90 days of purchases, every 15 minutes and once after the day
/// ended: `storage::cockpit::windows_due`), and up to
/// `COCKPIT_BACKFILL` days marked dirty; a program seen for the first time has its whole
/// history marked. Older days are final. Returns the days computed, `None` when a step failed.
pub async fn cockpit_once(store: &crate::storage::Store, now: i64) -> Option<usize> {
    use crate::storage::{DAY_MS, day_of};
    match store.claim_job("cockpit", now).await {
        Ok(true) => {}
        Ok(false) => return Some(0),
        Err(e) => {
            tracing::warn!(error = %e, "claiming the cockpit job failed; retrying");
            return None;
        }
    }
    let today = day_of(now);
    let programs = match store.cockpit_programs().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "reading programs for the dashboard failed; retrying");
            return None;
        }
    };
    let mut done = 0;
    let mut failed = false;
    for (program, first_day, has_rows) in programs {
        if !has_rows {
            let history: Vec<i64> = (0..)
                .map(|k| first_day + k * DAY_MS)
                .take_while(|d| *d < today - DAY_MS)
                .collect();
            if let Err(e) = store.mark_cockpit_dirty(&program, &history).await {
                tracing::warn!(error = %e, "marking a program's history for the dashboard failed");
                failed = true;
                continue;
            }
        }
        for day in [today - DAY_MS, today] {
            let computed = async {
                let stored = store.daily_figures(&program, day, day).await?.pop();
                let due = crate::storage::windows_due(stored.as_ref(), day, now);
                let mut f = store.compute_day(&program, day, due, now).await?;
                if let (false, Some(s)) = (due, stored) {
                    // Kept from the last computation of the windows.
                    (f.active, f.repeat, f.tiers, f.windows_at) =
                        (s.active, s.repeat, s.tiers, s.windows_at);
                }
                store.store_day(&f).await
            }
            .await;
            match computed {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::warn!(error = %e, program = %program, "computing the dashboard's figures failed");
                    failed = true;
                }
            }
        }
    }
    match store.cockpit_dirty(COCKPIT_BACKFILL).await {
        Ok(days) => {
            for (program, day) in days {
                let computed = match store.compute_day(&program, day, false, now).await {
                    Ok(f) => store.store_day(&f).await,
                    Err(e) => Err(e),
                };
                match computed {
                    Ok(()) => done += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, program = %program, "back-filling the dashboard's figures failed");
                        failed = true;
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "reading the dashboard's dirty days failed");
            failed = true;
        }
    }
    (!failed).then_some(done)
}
