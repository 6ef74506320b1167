//! Keeps Google's copy current (`google-wallet.md` §5): a worker drains `google_pending` (one
//! row per member, so bursts coalesce), writes the member's object after commit, and spends
//! Google's notification budget (3 per card per 24 h) on the changes the program's policy picks
//! (`domain::google_notify`; by default every balance change) while it lasts; past it the update
//! goes out silently, so the balance is always current and no request fails on the quota.
//!
//! Failures are handled per row (§7): a refusal (4xx) is recorded on the member's row with its
//! reason, logged and counted, and tried again on the member's next change, after the class is
//! written again, at start, or in an hour; a 404 re-creates the object or the class Google lost;
//! 429 and 5xx back off. A message is tried at most `MESSAGE_ATTEMPTS` times when refused, and
//! the card keeps at most Google's 10 messages (expired ones go first, then the oldest).

use crate::supervisor::Beat;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::client::GoogleError;
use super::{Google, model};
use crate::domain::CardState;
use crate::domain::google_notify::CardChange;
use crate::domain::now_ms;
use crate::domain::template::Standing;
use crate::storage::{GoogleMessage, GoogleObject, GooglePending, StorageError, Store};

/// Google's budget: notifications per card per rolling 24 hours.
pub const NOTIFY_BUDGET: i64 = 3;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Members synced per pass of the worker.
const BATCH: i64 = 50;
/// Tries a message Google refuses gets before it is given up (kept with the reason).
pub const MESSAGE_ATTEMPTS: i64 = 5;
/// Google keeps at most this many messages on an object (§3.4).
pub const MAX_MESSAGES: usize = 10;
/// A card Google refused is tried again after this long at the latest (a change, a class
/// update or a restart brings it forward).
const REFUSED_RETRY_MS: i64 = 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Google(#[from] GoogleError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Google {
    /// Inserts or updates the class for the template's current version, if Google has an older
    /// one (or none).
    async fn ensure_class(
        &self,
        store: &Store,
        template: &crate::domain::Template,
        public_base: &str,
    ) -> Result<String, SyncError> {
        let class_id = self.class_id(&template.id);
        if store.google_class_version(&template.id).await? != Some(template.version) {
            let program = store.get_program(&template.program_id).await?;
            let names = store.template_image_names(&template.id).await?;
            let has = |file: &str| names.iter().any(|n| n == file);
            let images = model::ClassImages {
                hero: has(crate::passes::apple::images::GOOGLE_HERO.0),
                // Served at `/google/images/…/wide-logo.png` (`web::google_image`).
                wide_logo: has(crate::passes::apple::images::GOOGLE_WIDE_LOGO.0)
                    .then_some("wide-logo.png"),
            };
            let class =
                model::loyalty_class_with(&class_id, &program, template, public_base, images);
            self.client.upsert("loyaltyClass", &class).await?;
            store
                .record_google_class(&template.id, &class_id, template.version, now_ms())
                .await?;
        }
        Ok(class_id)
    }

    /// The member's object as Google has it, written first if it never was, and its "Add to
    /// Google Wallet" link: what the API, the demo and the card page hand out.
    pub async fn save_link(
        &self,
        store: &Store,
        member_id: &str,
        public_base: &str,
    ) -> Result<(GoogleObject, String), SyncError> {
        let object = match store.google_object(member_id).await? {
            Some(o) => o,
            None => self.sync_member(store, member_id, public_base).await?,
        };
        let url = self.save_url(&object.class_id, &object.object_id)?;
        Ok((object, url))
    }

    /// Writes the member's object as it stands now: inserted the first time, patched after,
    /// with a notification when the balance changed and the budget allows.
    pub async fn sync_member(
        &self,
        store: &Store,
        member_id: &str,
        public_base: &str,
    ) -> Result<GoogleObject, SyncError> {
        // Before the member is read, so a change committed meanwhile counts for the next sync
        // (`redeemed_since` reads entries after this time).
        let now = now_ms();
        let member = store.get_member(member_id).await?;
        let pass = store.pass_for_member(member_id).await?;
        let template = store.get_template(&pass.template_id).await?;
        let program = store.get_program(&member.program_id).await?;
        let mut class_id = self.ensure_class(store, &template, public_base).await?;
        let mut previous = store.google_object(member_id).await?;
        // A reissued card is a new object; the old one goes inactive first, so the card a
        // lost or shared phone holds stops being a card. The first pass keeps the member's id.
        let object_id = match &previous {
            Some(before) if before.serial_number.as_deref() != Some(&pass.serial_number) => {
                let (status, json) = self
                    .client
                    .patch(
                        "loyaltyObject",
                        &before.object_id,
                        &serde_json::json!({"state": CardState::Inactive.google()}),
                    )
                    .await?;
                if !(200..300).contains(&status) && status != 404 {
                    return Err(GoogleError::Rejected {
                        status,
                        message: json.to_string(),
                    }
                    .into());
                }
                previous = None;
                self.object_id(&format!("{}-{}", member.id, pass.serial_number))
            }
            Some(before) => before.object_id.clone(),
            None => self.object_id(&member.id),
        };
        // The program's policy picks the changes worth a notification; the budget caps them.
        let notify = match &previous {
            None => false,
            Some(before) => {
                let policy = store.google_notify_policy(&program.id).await?;
                let change = CardChange {
                    points_before: before.synced_points,
                    points_after: member.points,
                    tier_before: before.synced_tier.as_deref(),
                    tier_after: member.tier.as_deref(),
                    redeemed: policy.on_redemption
                        && store.redeemed_since(member_id, before.synced_at).await?,
                };
                policy.notifies(&change)
                    && store
                        .google_notifications_since(&object_id, now - DAY_MS)
                        .await?
                        < NOTIFY_BUDGET
            }
        };
        // Tier progress and expiry cost two queries: only for designs that show them.
        let standing = if template.design.uses_standing() {
            Some(
                store
                    .member_standing(&member.id, &program.rules, now)
                    .await?,
            )
        } else {
            None
        };
        let next = program.rules.next_tier(member.tier.as_deref());
        let standing = standing.map_or_else(Standing::default, |s| Standing {
            next_tier: next.map_or("", |t| t.name.as_str()),
            points_to_next_tier: next.map_or(0, |t| (t.threshold - s.qualifying).max(0)),
            next_expiry: s.next_expiry,
            held: s.held,
        });
        let object = model::loyalty_object_with(
            &object_id,
            &class_id,
            &program,
            &template,
            &member,
            pass.state(),
            standing,
        );
        let notified = match self.write_object(&object, previous.is_some(), notify).await {
            // Inserting the object found no class: Google lost it (IssuerClassNotFoundException,
            // §7). Write the class again, then the object.
            Err(GoogleError::Rejected { status: 404, .. }) => {
                tracing::warn!(template = %template.id, "Google has no class for the card; creating it again");
                store.forget_google_class(&template.id).await?;
                class_id = self.ensure_class(store, &template, public_base).await?;
                self.write_object(&object, previous.is_some(), notify)
                    .await?
            }
            other => other?,
        };
        let synced = GoogleObject {
            object_id,
            class_id,
            synced_points: member.points,
            synced_at: now,
            synced_version: pass.updated_at,
            synced_tier: member.tier.clone(),
            serial_number: Some(pass.serial_number.clone()),
        };
        store
            .record_google_object(member_id, &synced, notified)
            .await?;
        Ok(synced)
    }

    /// Inserts the object (the first time) or patches it; returns whether it notified.
    async fn write_object(
        &self,
        object: &Value,
        exists: bool,
        notify: bool,
    ) -> Result<bool, GoogleError> {
        if exists {
            self.patch_object(object, notify).await
        } else {
            self.client.upsert("loyaltyObject", object).await?;
            Ok(false)
        }
    }

    /// PATCHes the object (inserting it if Google lost it); returns whether it notified.
    async fn patch_object(&self, object: &Value, notify: bool) -> Result<bool, GoogleError> {
        let id = object["id"].as_str().unwrap_or_default();
        let mut body = object.clone();
        if notify {
            // Not stored by Google: it must ride on every update that should notify [§5.2].
            body["notifyPreference"] = "NOTIFY_ON_UPDATE".into();
        }
        match self.client.patch("loyaltyObject", id, &body).await {
            Ok((404, _)) => {
                self.client.upsert("loyaltyObject", object).await?;
                Ok(false)
            }
            Ok((status, json)) if !(200..300).contains(&status) => Err(GoogleError::Rejected {
                status,
                message: json.to_string(),
            }),
            Ok(_) => Ok(notify),
            // Our count and Google's disagree (another server, a message): update silently.
            Err(GoogleError::Quota) if notify => {
                tracing::info!(
                    object = id,
                    "Google's notification quota is spent; updating silently"
                );
                Box::pin(self.patch_object(object, false)).await
            }
            Err(e) => Err(e),
        }
    }
}

impl Google {
    /// Adds a message to the member's card (`addMessage`), with a notification while the
    /// budget lasts and silently after; returns whether it notified.
    pub async fn add_message(
        &self,
        store: &Store,
        message: &GoogleMessage,
        public_base: &str,
    ) -> Result<(String, bool), SyncError> {
        let object = match store.google_object(&message.member_id).await? {
            Some(o) => o,
            None => {
                self.sync_member(store, &message.member_id, public_base)
                    .await?
            }
        };
        let notify = store
            .google_notifications_since(&object.object_id, now_ms() - DAY_MS)
            .await?
            < NOTIFY_BUDGET;
        if !self.make_room(&object.object_id).await? {
            // Google lost the object: write it again first.
            self.sync_member(store, &message.member_id, public_base)
                .await?;
        }
        let path = format!("/loyaltyObject/{}/addMessage", object.object_id);
        let send = |notify: bool| {
            let body = serde_json::json!({"message": {
                "id": message.message_id,
                "header": message.header,
                "body": message.body,
                "messageType": if notify { "TEXT_AND_NOTIFY" } else { "TEXT" },
            }});
            let path = path.clone();
            async move {
                self.client
                    .call(reqwest::Method::POST, &path, Some(&body))
                    .await
            }
        };
        let notified = match send(notify).await {
            Ok((200..=299, _)) => notify,
            Err(GoogleError::Quota) if notify => {
                expect_2xx(send(false).await?)?;
                false
            }
            other => {
                expect_2xx(other?)?;
                notify
            }
        };
        Ok((object.object_id, notified))
    }

    /// Makes room for one more message on the object: Google keeps at most `MAX_MESSAGES`, so
    /// at the limit the messages whose display interval ended go first, then the oldest
    /// (`messages` is PATCHed, §5.3). `false` when Google has no such object.
    async fn make_room(&self, object_id: &str) -> Result<bool, GoogleError> {
        let path = format!("/loyaltyObject/{object_id}");
        let (status, object) = self.client.call(reqwest::Method::GET, &path, None).await?;
        if status == 404 {
            return Ok(false);
        }
        expect_2xx((status, object.clone()))?;
        let messages = object["messages"].as_array().cloned().unwrap_or_default();
        if messages.len() < MAX_MESSAGES {
            return Ok(true);
        }
        let kept = prune_messages(messages, time::OffsetDateTime::now_utc());
        let body = serde_json::json!({ "messages": kept });
        expect_2xx(self.client.patch("loyaltyObject", object_id, &body).await?)?;
        Ok(true)
    }
}

/// The messages to keep so one more fits under `MAX_MESSAGES`: those whose display interval
/// ended before `now` are dropped first, then the oldest (Google appends, so the first).
pub fn prune_messages(messages: Vec<Value>, now: time::OffsetDateTime) -> Vec<Value> {
    let ended = |m: &Value| {
        m["displayInterval"]["end"]["date"]
            .as_str()
            .and_then(|d| {
                time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339).ok()
            })
            .is_some_and(|end| end < now)
    };
    let mut kept: Vec<Value> = messages.into_iter().filter(|m| !ended(m)).collect();
    let over = (kept.len() + 1).saturating_sub(MAX_MESSAGES);
    kept.drain(..over);
    kept
}

fn expect_2xx((status, json): (u16, Value)) -> Result<(), GoogleError> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(GoogleError::Rejected {
            status,
            message: json.to_string(),
        })
    }
}

/// The worker: runs until aborted.
pub struct Worker {
    pub google: Arc<Google>,
    pub store: Store,
    pub public_base: String,
    pub retry_base_ms: u64,
    pub poll: Duration,
}

impl Worker {
    pub async fn run(&self, beat: Beat) {
        // The configuration may have been fixed since Google refused some cards: try them now.
        match self.store.google_retry_refused(None, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(cards = n, "trying again the cards Google refused"),
            Err(e) => tracing::warn!(error = %e, "could not bring refused Google cards forward"),
        }
        loop {
            let round = self.run_once().await;
            if round.is_ok() {
                beat.ok();
            }
            match round {
                Ok(n) if n as i64 >= BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "Google sync pass failed; retrying"),
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One pass: classes of changed templates, then the members due. Returns members handled.
    pub async fn run_once(&self) -> Result<usize, StorageError> {
        for template_id in self.store.templates_ahead_of_google().await? {
            let template = self.store.get_template(&template_id).await?;
            match self
                .google
                .ensure_class(&self.store, &template, &self.public_base)
                .await
            {
                // The new class may be the fix for cards Google refused.
                Ok(_) => {
                    self.store
                        .google_retry_refused(Some(&template_id), now_ms())
                        .await?;
                }
                Err(SyncError::Storage(e)) => return Err(e),
                Err(SyncError::Google(e)) => {
                    self.store.metrics().google_failure("class", &e.label());
                    tracing::warn!(error = %e, template = %template_id, "updating the Google class failed; retrying");
                }
            }
        }
        let due = self.store.google_due(now_ms(), BATCH).await?;
        for p in &due {
            self.sync(p).await?;
        }
        let messages = self.store.google_messages_due(now_ms(), BATCH).await?;
        for m in &messages {
            // A consent withdrawn while this batch was under way drops the message (its row
            // is gone): checked right before each call, not when the batch was claimed.
            if !self.store.google_message_still_due(m).await? {
                tracing::info!(member = %m.member_id, message = %m.message_id,
                    "message withdrawn before it was sent");
                continue;
            }
            match self
                .google
                .add_message(&self.store, m, &self.public_base)
                .await
            {
                Ok((object_id, notified)) => {
                    self.store
                        .google_message_done(m, &object_id, notified, now_ms())
                        .await?
                }
                Err(SyncError::Storage(e)) => return Err(e),
                Err(SyncError::Google(e)) => {
                    self.store.metrics().google_failure("message", &e.label());
                    let error = e.to_string();
                    if e.refused().is_some() && m.attempts + 1 >= MESSAGE_ATTEMPTS {
                        tracing::warn!(error, member = %m.member_id, message = %m.message_id,
                            attempts = m.attempts + 1, "Google refused the message; giving up");
                        self.store
                            .google_message_failed(m, &error, now_ms())
                            .await?
                    } else {
                        tracing::warn!(error, member = %m.member_id, message = %m.message_id,
                            "adding a Google message failed; retrying");
                        let delay =
                            crate::push::dispatcher::backoff_ms(self.retry_base_ms, m.attempts);
                        self.store
                            .google_message_retry(m, now_ms() + delay, &error)
                            .await?
                    }
                }
            }
        }
        Ok(due.len() + messages.len())
    }

    async fn sync(&self, p: &GooglePending) -> Result<(), StorageError> {
        match self
            .google
            .sync_member(&self.store, &p.member_id, &self.public_base)
            .await
        {
            Ok(_) => self.store.google_done(p).await,
            Err(SyncError::Storage(StorageError::NotFound(what))) => {
                tracing::warn!(member = %p.member_id, what, "nothing to sync to Google");
                self.store.google_done(p).await
            }
            Err(SyncError::Storage(e)) => Err(e),
            Err(SyncError::Google(e)) => {
                self.store.metrics().google_failure("object", &e.label());
                let refused = e.refused();
                let delay = match refused {
                    None => crate::push::dispatcher::backoff_ms(self.retry_base_ms, p.attempts),
                    Some(_) => REFUSED_RETRY_MS,
                };
                if refused.is_some() {
                    tracing::warn!(error = %e, member = %p.member_id,
                        "Google Wallet refused the card; trying again on its next change");
                } else {
                    tracing::warn!(error = %e, member = %p.member_id, attempts = p.attempts + 1,
                        "Google Wallet is unavailable; backing off");
                }
                self.store
                    .google_retry(p, now_ms() + delay, &e.to_string(), refused)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pruning_drops_ended_messages_first_then_the_oldest() {
        let now = time::macros::datetime!(2026-12-03 12:00 UTC);
        let mut messages: Vec<Value> = (0..10).map(|i| json!({"id": format!("m{i}")})).collect();
        messages[4]["displayInterval"] = json!({"end": {"date": "2026-12-01T00:00:00Z"}});
        messages[6]["displayInterval"] = json!({"end": {"date": "2027-01-01T00:00:00Z"}});
        let kept = prune_messages(messages.clone(), now);
        let ids: Vec<&str> = kept.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["m0", "m1", "m2", "m3", "m5", "m6", "m7", "m8", "m9"]);
        messages[4] = json!({"id": "m10"});
        let kept = prune_messages(messages, now);
        assert_eq!(kept.len(), 9);
        assert_eq!(kept[0]["id"], "m1", "the oldest goes");
        let few: Vec<Value> = (0..3).map(|i| json!({"id": i})).collect();
        assert_eq!(prune_messages(few.clone(), now), few);
    }
}
