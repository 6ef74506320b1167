//! Erasing a member's personal data (the right to erasure). One transaction: the card ends as
//! by `end_card` (its version moves, Google is queued so the object goes inactive and loses the
//! name); name, external id, e-mail, phone and birthday are removed; the member gets a fresh
//! barcode; the devices holding the member's passes lose their registrations (and their push
//! tokens once they hold no other pass); the free-text reasons on the member's ledger entries,
//! the messages sent to the card and stored request replays naming the member are removed. The
//! member row stays under its random id, the pseudonym that the ledger (points and sums intact)
//! and the consent records (proof of what was agreed) keep.
//!
//! Removed values must not linger in the file either: SQLite connections run with
//! `secure_delete` (freed cells and pages are zeroed), and after the commit the WAL, which still
//! holds the old page images, is checkpointed and truncated (`scrub`).

use sqlx::Row;

use super::changes::CARD_ENDED;
use super::{Backend, Result, StorageError, Store};
use crate::secret::random_barcode;

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// The profile fields that held a value: `display_name`, `external_id`, `email`, `phone`,
    /// `birthday`.
    pub fields: Vec<&'static str>,
    /// Whether this erasure ended a live card.
    pub card_ended: bool,
    pub registrations: u64,
    pub devices: u64,
    /// Ledger entries whose free-text reason was removed (the entries and points stay).
    pub ledger_reasons: u64,
    pub messages: u64,
    pub idempotency_records: u64,
    /// Ledger entries and consent records kept under the pseudonymous member id.
    pub ledger_entries_kept: i64,
    pub consents_kept: i64,
    /// When the member was erased (an earlier erasure's time if they were already).
    pub erased_at: i64,
    /// Whether the SQLite WAL was truncated after the commit (always `true` on PostgreSQL).
    pub scrubbed: bool,
}

impl Store {
    /// Erases the member's personal data (see the module docs). Erasing an erased member
    /// removes whatever was added since and keeps the first erasure's time.
    pub async fn erase_member(&self, member_id: &str, now: i64) -> Result<Erasure> {
        let (turn, mut tx) = self.write_tx().await?;
        let sql = format!(
            "SELECT display_name, external_id, email, phone, birthday, erased_at FROM members WHERE id = $1{}",
            self.for_update()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(member_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StorageError::NotFound("member"))?;
        let mut e = Erasure::default();
        let name: String = row.try_get("display_name")?;
        if !name.is_empty() {
            e.fields.push("display_name");
        }
        for field in ["external_id", "email", "phone", "birthday"] {
            if row.try_get::<Option<String>, _>(field)?.is_some() {
                e.fields.push(field);
            }
        }
        e.erased_at = row.try_get::<Option<i64>, _>("erased_at")?.unwrap_or(now);

        let live =
            sqlx::query("SELECT 1 AS one FROM passes WHERE member_id = $1 AND ended_at IS NULL")
                .bind(member_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        let members = [member_id.to_string()];
        if live {
            let payload = serde_json::json!({"ended_at": now, "erased": true}).to_string();
            self.cards_changed(&mut tx, &members, CARD_ENDED, &payload, now)
                .await?;
            sqlx::query(
                "UPDATE passes SET ended_at = $1 WHERE member_id = $2 AND ended_at IS NULL",
            )
            .bind(now)
            .bind(member_id)
            .execute(&mut *tx)
            .await?;
            e.card_ended = true;
        } else {
            // The object still shows the name: Google hears of the erasure either way.
            self.queue_google(&mut tx, members.iter().map(String::as_str), now)
                .await?;
        }

        let devices: Vec<String> = sqlx::query(
            "SELECT DISTINCT r.device_library_identifier FROM registrations r
             JOIN passes p ON p.serial_number = r.serial_number WHERE p.member_id = $1",
        )
        .bind(member_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("device_library_identifier"))
        .collect::<std::result::Result<_, _>>()?;
        super::cockpit::record_wallet_events(
            &mut tx,
            "remove",
            now,
            "p.member_id = $2",
            &[member_id],
        )
        .await?;
        e.registrations = sqlx::query(
            "DELETE FROM registrations WHERE serial_number IN
             (SELECT serial_number FROM passes WHERE member_id = $1)",
        )
        .bind(member_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for device in &devices {
            e.devices += sqlx::query(
                "DELETE FROM devices WHERE device_library_identifier = $1
                 AND NOT EXISTS (SELECT 1 FROM registrations WHERE device_library_identifier = $1)",
            )
            .bind(device)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }

        sqlx::query(
            "UPDATE members SET display_name = '', external_id = NULL, email = NULL, phone = NULL,
                    email_hash = NULL, phone_hash = NULL,
                    birthday = NULL, barcode = $1, erased_at = $2 WHERE id = $3",
        )
        .bind(random_barcode(16))
        .bind(e.erased_at)
        .bind(member_id)
        .execute(&mut *tx)
        .await?;
        e.ledger_reasons = sqlx::query(
            "UPDATE ledger_entries SET reason = NULL WHERE member_id = $1 AND reason IS NOT NULL",
        )
        .bind(member_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        e.messages = sqlx::query("DELETE FROM google_messages WHERE member_id = $1")
            .bind(member_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Stored answers of ledger requests repeat the entry, reason included. Member ids are
        // random, so matching one inside the stored JSON finds only this member's requests.
        e.idempotency_records = sqlx::query("DELETE FROM idempotency_keys WHERE response LIKE $1")
            .bind(format!("%\"{member_id}\"%"))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let kept = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM ledger_entries WHERE member_id = $1) AS entries,
                    (SELECT COUNT(*) FROM consents WHERE member_id = $1) AS consents",
        )
        .bind(member_id)
        .fetch_one(&mut *tx)
        .await?;
        e.ledger_entries_kept = kept.try_get("entries")?;
        e.consents_kept = kept.try_get("consents")?;
        // Earlier events named the external id (`member.created`): only ids stay.
        sqlx::query(
            "UPDATE events SET payload = '{\"erased\":true}' WHERE member_id = $1 AND type = $2",
        )
        .bind(member_id)
        .bind(super::events::kinds::MEMBER_CREATED)
        .execute(&mut *tx)
        .await?;
        let erased = super::events::NewEvent::new(
            super::events::kinds::MEMBER_ERASED,
            member_id,
            serde_json::json!({"fields": e.fields, "card_ended": e.card_ended}),
        );
        self.record_events(&mut tx, &[erased], now).await?;
        tx.commit().await?;
        drop(turn);
        self.forget(super::cache::Stale::Members(vec![member_id.to_string()]));
        self.forget(super::cache::Stale::Devices(devices.clone()));
        self.committed();
        e.scrubbed = self.scrub().await?;
        Ok(e)
    }

    /// After an erasure: truncates the SQLite WAL, whose frames still hold the pages as they
    /// were before (a TRUNCATE checkpoint, under this process's write turn so no writer of ours
    /// waits in SQLite's busy handler). `false` when a reader kept it from finishing; the next
    /// checkpoints overwrite the frames. PostgreSQL keeps no such copy that a dump would show.
    pub(super) async fn scrub(&self) -> Result<bool> {
        if self.backend != Backend::Sqlite {
            return Ok(true);
        }
        let _turn = self.write_turn().await;
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? == 0)
    }
}
