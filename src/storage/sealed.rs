//! Members' e-mail and phone, sealed at rest (`crate::privacy`): sealing on write, opening on
//! read, the lookup hashes a join matches on, and re-sealing every value under the ring's
//! current key (`tessera keys rotate`; at a server's start, the values an earlier version left
//! plain).
//!
//! A row whose `email` is set and `email_hash` NULL holds the plain value an earlier version
//! wrote (migration 0016); likewise `phone`. Everything else is sealed.

use std::sync::Arc;

use sqlx::Row;

use super::{Result, StorageError, Store};
use crate::privacy::{Field, KeyRing};

/// Rows a re-sealing batch takes in one short transaction.
const BATCH: i64 = 500;

/// What `reseal_contacts` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resealed {
    /// The ring's current key: every value re-sealed is under it.
    pub key: String,
    /// Members whose e-mail or phone was re-sealed.
    pub members: u64,
    /// Of those, members with a value an earlier version stored plain.
    pub were_plain: u64,
    /// Values still under another key (or plain) when it finished: 0 unless a writer with an
    /// older ring wrote meanwhile; run it again.
    pub left: i64,
}

impl Store {
    /// Sets the key ring that seals and opens members' e-mail and phone. Until it is set,
    /// writing or reading them is refused.
    pub fn set_key_ring(&self, ring: Arc<KeyRing>) {
        *self.keys.write().expect("key ring lock") = Some(ring);
    }

    /// A keyed hash naming an e-mail address without holding it (the current key's lookup
    /// hash), for throttles that count per address.
    pub fn email_key(&self, email: &str) -> Result<String> {
        Ok(self.key_ring()?.lookup(crate::privacy::Field::Email, email))
    }

    pub(super) fn key_ring(&self) -> Result<Arc<KeyRing>> {
        self.keys
            .read()
            .expect("key ring lock")
            .clone()
            .ok_or_else(|| StorageError::Privacy("no key ring for personal data is set".into()))
    }

    /// A value sealed for `field` of `member_id`, and its lookup hash (both `None` for `None`).
    pub(super) fn seal(
        ring: &KeyRing,
        field: Field,
        member_id: &str,
        value: Option<&str>,
    ) -> (Option<String>, Option<String>) {
        match value {
            Some(v) => (
                Some(ring.seal(field, member_id, v)),
                Some(ring.lookup(field, v)),
            ),
            None => (None, None),
        }
    }

    /// The value a column holds: opened, or as it is when an earlier version left it plain
    /// (`hash` NULL).
    pub(super) fn open(
        ring: &KeyRing,
        field: Field,
        member_id: &str,
        stored: Option<String>,
        hash: Option<&str>,
    ) -> Result<Option<String>> {
        match (stored, hash) {
            (None, _) => Ok(None),
            (Some(plain), None) => Ok(Some(plain)),
            (Some(sealed), Some(_)) => {
                ring.open(field, member_id, &sealed).map(Some).map_err(|e| {
                    StorageError::Privacy(format!("{field:?} of member {member_id}: {e}"))
                })
            }
        }
    }

    /// Rewrites the members table so the bytes of replaced rows (plain values an earlier version
    /// stored) leave its data files: `VACUUM FULL` on PostgreSQL (a brief exclusive lock, at
    /// start, before the server answers); nothing on SQLite, whose `secure_delete` zeroes them.
    pub async fn compact_members(&self) -> Result<()> {
        if self.backend == super::Backend::Postgres {
            sqlx::query("VACUUM FULL members")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Refuses a ring that lacks a key some member's e-mail or phone is sealed with: a server
    /// started with a lost or replaced key file would fail to read them, and the join page
    /// would not find returning members (one scan of the members at start).
    pub async fn check_key_ring(&self) -> Result<()> {
        let ring = self.key_ring()?;
        let ids = ring.ids();
        let unknown = |column: &str| {
            (0..ids.len())
                .map(|k| format!(" AND {column} NOT LIKE ${}", k + 1))
                .collect::<String>()
        };
        let sql = format!(
            "SELECT email, email_hash, phone, phone_hash FROM members
             WHERE (email_hash IS NOT NULL{}) OR (phone_hash IS NOT NULL{}) LIMIT 1",
            unknown("email"),
            unknown("phone")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &ids {
            q = q.bind(format!("v1.{id}.%"));
        }
        let Some(r) = q.fetch_optional(&self.pool).await? else {
            return Ok(());
        };
        let mut missing = "?".to_string();
        for (value, hash) in [("email", "email_hash"), ("phone", "phone_hash")] {
            let value: Option<String> = r.try_get(value)?;
            let hash: Option<String> = r.try_get(hash)?;
            if let (Some(v), Some(_)) = (value, hash) {
                match KeyRing::key_of(&v) {
                    Some(id) if ids.contains(&id) => {}
                    other => missing = other.unwrap_or("?").to_string(),
                }
            }
        }
        Err(StorageError::Privacy(format!(
            "members' e-mail and phone are sealed with key {missing}, which the key ring ({}) lacks: restore the key file that holds it, or add that key to [privacy] after the current one",
            ids.join(", ")
        )))
    }

    /// Re-seals, under the ring's current key, every member's e-mail and phone that is under
    /// another key or (with `only_plain`, only these) still plain, `BATCH` members per short
    /// transaction in id order, each batch reading its rows under the write lock (`FOR UPDATE`
    /// on PostgreSQL) so a concurrent profile change is never overwritten. Safe to run again
    /// or beside a server; a run cut short resumes where values are left. On SQLite the WAL,
    /// which still holds the old values, is truncated afterwards.
    pub async fn reseal_contacts(&self, only_plain: bool) -> Result<Resealed> {
        let ring = self.key_ring()?;
        // Values not like this are pending: under another key, or plain (`%`: only plain).
        let current = if only_plain {
            "%".to_string()
        } else {
            format!("v1.{}.%", ring.current())
        };
        let pending = "((email IS NOT NULL AND (email_hash IS NULL OR email NOT LIKE $2))
              OR (phone IS NOT NULL AND (phone_hash IS NULL OR phone NOT LIKE $2)))";
        let mut done = Resealed {
            key: ring.current().to_string(),
            ..Default::default()
        };
        let mut after = String::new();
        loop {
            self.yield_to_postings().await;
            let (turn, mut tx) = self.write_tx().await?;
            let sql = format!(
                "SELECT id, email, email_hash, phone, phone_hash FROM members
                 WHERE id > $1 AND {pending} ORDER BY id LIMIT $3{}",
                self.for_update()
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&after)
                .bind(&current)
                .bind(BATCH)
                .fetch_all(&mut *tx)
                .await?;
            for r in &rows {
                let id: String = r.try_get("id")?;
                let (email, email_hash): (Option<String>, Option<String>) =
                    (r.try_get("email")?, r.try_get("email_hash")?);
                let (phone, phone_hash): (Option<String>, Option<String>) =
                    (r.try_get("phone")?, r.try_get("phone_hash")?);
                let plain = (email.is_some() && email_hash.is_none())
                    || (phone.is_some() && phone_hash.is_none());
                let email = Self::open(&ring, Field::Email, &id, email, email_hash.as_deref())?;
                let phone = Self::open(&ring, Field::Phone, &id, phone, phone_hash.as_deref())?;
                let (email, email_hash) = Self::seal(&ring, Field::Email, &id, email.as_deref());
                let (phone, phone_hash) = Self::seal(&ring, Field::Phone, &id, phone.as_deref());
                sqlx::query(
                    "UPDATE members SET email = $1, email_hash = $2, phone = $3, phone_hash = $4
                     WHERE id = $5",
                )
                .bind(email)
                .bind(email_hash)
                .bind(phone)
                .bind(phone_hash)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                done.members += 1;
                done.were_plain += plain as u64;
                after = id;
            }
            tx.commit().await?;
            drop(turn);
            if (rows.len() as i64) < BATCH {
                break;
            }
        }
        let sql = format!("SELECT COUNT(*) AS n FROM members WHERE id > $1 AND {pending}");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind("")
            .bind(&current)
            .fetch_one(&self.pool)
            .await?;
        done.left = super::rows::int(&row, "n")?;
        if done.members > 0 {
            self.scrub().await?;
        }
        Ok(done)
    }
}
