//! Keeps Google's copy current (`google-wallet.md` §5): a worker drains `google_pending` (one
//! row per member, so bursts coalesce), writes the member's object after commit, and spends
//! Google's notification budget (3 per card per 24 h) only on balance changes while it lasts;
//! past it the update goes out silently, so the balance is always current and no request fails
//! on the quota.

use crate::supervisor::Beat;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::client::GoogleError;
use super::{Google, model};
use crate::domain::now_ms;
use crate::storage::{GoogleMessage, GoogleObject, GooglePending, StorageError, Store};

/// Google's budget: notifications per card per rolling 24 hours.
pub const NOTIFY_BUDGET: i64 = 3;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Members synced per pass of the worker.
const BATCH: i64 = 50;

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
        let member = store.get_member(member_id).await?;
        let pass = store.pass_for_member(member_id).await?;
        let template = store.get_template(&pass.template_id).await?;
        let program = store.get_program(&member.program_id).await?;
        let class_id = self.ensure_class(store, &template, public_base).await?;
        let now = now_ms();
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
                        &serde_json::json!({"state": model::CardState::Inactive.google()}),
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
        let object = model::loyalty_object_in(
            &object_id,
            &class_id,
            &program,
            &template,
            &member,
            pass.state(),
        );
        let mut notified = false;
        match &previous {
            None => {
                self.client.upsert("loyaltyObject", &object).await?;
            }
            Some(before) => {
                let wants_notice = before.synced_points != member.points
                    && store
                        .google_notifications_since(&object_id, now - DAY_MS)
                        .await?
                        < NOTIFY_BUDGET;
                notified = self.patch_object(&object, wants_notice).await?;
            }
        }
        let synced = GoogleObject {
            object_id,
            class_id,
            synced_points: member.points,
            synced_at: now,
            serial_number: Some(pass.serial_number.clone()),
        };
        store
            .record_google_object(member_id, &synced, notified)
            .await?;
        Ok(synced)
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
            if let Err(e) = self
                .google
                .ensure_class(&self.store, &template, &self.public_base)
                .await
            {
                tracing::warn!(error = %e, template = %template_id, "updating the Google class failed; retrying");
            }
        }
        let due = self.store.google_due(now_ms(), BATCH).await?;
        for p in &due {
            self.sync(p).await?;
        }
        let messages = self.store.google_messages_due(now_ms(), BATCH).await?;
        for m in &messages {
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
                    tracing::warn!(error = %e, member = %m.member_id, "adding a Google message failed; retrying");
                    let delay = crate::push::dispatcher::backoff_ms(self.retry_base_ms, m.attempts);
                    self.store.google_message_retry(m, now_ms() + delay).await?
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
                let delay = match &e {
                    GoogleError::Retry(_) | GoogleError::Quota => {
                        crate::push::dispatcher::backoff_ms(self.retry_base_ms, p.attempts)
                    }
                    // A refused request will not pass as it is: look again in an hour, when
                    // the configuration or template may have been fixed.
                    GoogleError::Rejected { .. } | GoogleError::Config(_) => {
                        tracing::error!(error = %e, member = %p.member_id, "Google Wallet refused the card");
                        3_600_000
                    }
                };
                self.store
                    .google_retry(p, now_ms() + delay, &e.to_string())
                    .await
            }
        }
    }
}
