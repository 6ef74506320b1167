//! The storage layer: the only place with SQL.
//!
//! One implementation serves SQLite (default, WAL) and PostgreSQL through sqlx's `Any` driver
//! over a portable schema (text ids, BIGINT milliseconds, 0/1 booleans); the database URL picks
//! the backend. Writes that must not interleave open `BEGIN IMMEDIATE` on SQLite, so a writer
//! takes the lock up front instead of failing to upgrade a read lock halfway.

mod changes;
mod designer;
mod enrollment;
mod google;
mod ledger;
mod passkit;
mod rows;
mod staff;

pub use designer::{Draft, PublishJob, TemplateSummary, VersionInfo};
pub use enrollment::{ConsentRecord, ImportBatch, ImportRow};
pub use google::{GoogleMessage, GoogleObject, GooglePending};
pub use ledger::{Actor, MemberStanding, OutboxRow};
pub use passkit::{DueChange, PushSettlement, PushTarget, Registration};
pub use staff::{StaffSession, StaffUser};

use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::Notify;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use crate::domain::{
    Member, NewMember, NewProgram, Pass, Program, Template, TemplateDesign, now_ms,
};
use crate::ledger::LoyaltyRules;
use crate::secret::{random_barcode, random_token};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the balance is {available} points; it cannot go below zero")]
    Insufficient { available: i64 },
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyMismatch,
    /// A concurrent request with the same idempotency key committed first; retried internally.
    #[error("a concurrent request used the same Idempotency-Key")]
    IdempotencyRace,
    /// A well-formed request that the ledger's rules refuse.
    #[error("{0}")]
    Rejected(String),
    /// A purchase or redemption past the actor's limit: one operation (`moved_today` is
    /// `None`) or the day's total.
    #[error("this operation moves {points} points, past the limit of {limit}")]
    OverLimit {
        limit: i64,
        points: i64,
        moved_today: Option<i64>,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// API key roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Marketer,
    Cashier,
    Integration,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Marketer => "marketer",
            Role::Cashier => "cashier",
            Role::Integration => "integration",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Role, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "marketer" => Ok(Role::Marketer),
            "cashier" => Ok(Role::Cashier),
            "integration" => Ok(Role::Integration),
            other => Err(format!(
                "unknown role {other:?}; roles are admin, marketer, cashier, integration"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub secret_hash: String,
    pub revoked: bool,
    /// What the key may move with purchases and redemptions (cashier keys).
    pub limits: crate::ledger::PointLimits,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Woken after every committed change that wrote an outbox row, so the push dispatcher
    /// starts at once instead of at its next poll.
    changed: Arc<Notify>,
    /// Whether changes also queue a Google Wallet sync (`enable_google_sync`).
    google: Arc<std::sync::atomic::AtomicBool>,
    /// Ledger postings under way: batch jobs let them through first (`yield_to_postings`).
    postings: Arc<Postings>,
    /// SQLite writers of this process, in turn (`write_turn`).
    writers: Arc<tokio::sync::Mutex<()>>,
}

/// One writer's turn at SQLite's write lock.
type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

/// Counts ledger postings in flight, so a batch job (a publish step) starts its next batch only
/// when no till is waiting for the write lock, instead of queueing tills behind every batch.
#[derive(Default)]
struct Postings {
    active: std::sync::atomic::AtomicUsize,
    idle: Notify,
}

/// Held for the length of one posting.
struct Posting(Arc<Postings>);

impl Drop for Posting {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The longest a batch job waits for postings to finish before it takes its turn anyway, so a
/// steady stream of postings cannot starve it.
const YIELD_AT_MOST: std::time::Duration = std::time::Duration::from_millis(200);

impl Store {
    /// Connects to `url` (`sqlite:...` or `postgres:...`) and brings the schema up to date.
    ///
    /// On SQLite, concurrent first starts (or `tessera migrate` runs) on one file take turns
    /// through an exclusive lock on `<file>.lock`: sqlx's migration lock is a no-op there, so
    /// two would both try to create the tables.
    pub async fn connect(url: &str) -> Result<Store> {
        let lock = match sqlite_file(url) {
            Some(path) => Some(lock_file(path).await?),
            None => None,
        };
        let store = Self::connect_without_migrating(url).await?;
        store.migrate().await?;
        drop(lock);
        Ok(store)
    }

    pub async fn connect_without_migrating(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let pool = match backend {
            Backend::Sqlite => {
                let url = prepare_sqlite_url(url)?;
                // An in-memory database exists per connection, so it must have exactly one.
                let max = if url.contains(":memory:") { 1 } else { 8 };
                AnyPoolOptions::new()
                    .max_connections(max)
                    .after_connect(|conn, _meta| {
                        Box::pin(async move {
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                // FULL: a commit is on disk before the till hears "credited". NORMAL
                                // in WAL mode can lose the last commits on power loss.
                                "PRAGMA synchronous = FULL",
                                "PRAGMA foreign_keys = ON",
                                "PRAGMA busy_timeout = 10000",
                                // 4 MiB page cache per connection: 32 MiB for the pool
                                // at most, which a publish to every holder fills.
                                "PRAGMA cache_size = -4096",
                                // No checkpoint inside a commit: it would run while the
                                // committing writer (often a till) holds the write lock.
                                // `Store::checkpoint` runs beside the writers instead.
                                "PRAGMA wal_autocheckpoint = 0",
                                // The WAL file is cut back to 64 MiB after a checkpoint.
                                "PRAGMA journal_size_limit = 67108864",
                            ] {
                                conn.execute(pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .connect(url)
                    .await?
            }
        };
        Ok(Store {
            pool,
            backend,
            changed: Arc::new(Notify::new()),
            google: Arc::default(),
            postings: Arc::default(),
            writers: Arc::default(),
        })
    }

    /// Marks a ledger posting under way until the guard drops.
    fn posting(&self) -> Posting {
        self.postings
            .active
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Posting(self.postings.clone())
    }

    /// Waits (at most `YIELD_AT_MOST`) until no ledger posting is under way: batch jobs call
    /// it before each batch, so tills never wait behind a stream of batches.
    async fn yield_to_postings(&self) {
        let wait = async {
            loop {
                let idle = self.postings.idle.notified();
                if self
                    .postings
                    .active
                    .load(std::sync::atomic::Ordering::Acquire)
                    == 0
                {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(YIELD_AT_MOST, wait).await;
    }

    /// Notified after each committed change that wrote to the outbox.
    pub fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Runs one statement given as text, such as `CREATE DATABASE` for test set-up. Never pass
    /// it user input.
    pub async fn execute_admin(&self, statement: &str) -> Result<()> {
        self.pool
            .execute(sqlx::AssertSqlSafe(statement.to_string()))
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction: `BEGIN IMMEDIATE` on SQLite so concurrent writers queue on the
    /// busy timeout instead of deadlocking on a lock upgrade.
    /// On SQLite the caller first takes this process's turn at the write lock (`write_turn`),
    /// held until the returned guard drops.
    /// Bind it as `let (_turn, mut tx)`: locals drop in reverse order, so an unfinished
    /// transaction is rolled back before the next writer gets its turn.
    async fn write_tx(&self) -> Result<(Option<WriteTurn>, Transaction<'static, Any>)> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok((turn, tx))
    }

    /// SQLite has one writer at a time. Writers of this process queue for it here, first come
    /// first served, instead of in SQLite's busy handler, which sleeps up to 100 ms between
    /// tries and lets a stream of batches (a publish job, push settlements) starve a till.
    /// One process per database file (`serve` refuses a second), so this is every writer.
    async fn write_turn(&self) -> Option<WriteTurn> {
        match self.backend {
            Backend::Sqlite => Some(self.writers.clone().lock_owned().await),
            Backend::Postgres => None,
        }
    }

    // ---- programs ----

    pub async fn insert_program(&self, p: &NewProgram) -> Result<Program> {
        let program = Program {
            id: new_id(),
            slug: p.slug.clone(),
            name: p.name.clone(),
            pass_type_identifier: p.pass_type_identifier.clone(),
            team_identifier: p.team_identifier.clone(),
            organization_name: p.organization_name.clone(),
            rules: p.rules.clone(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO programs (id, slug, name, pass_type_identifier, team_identifier, organization_name, created_at, rules)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&program.id)
        .bind(&program.slug)
        .bind(&program.name)
        .bind(&program.pass_type_identifier)
        .bind(&program.team_identifier)
        .bind(&program.organization_name)
        .bind(program.created_at)
        .bind(serde_json::to_string(&program.rules).expect("rules serialise"))
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, || format!("a program with slug {:?} exists already", p.slug)))?;
        Ok(program)
    }

    pub async fn get_program(&self, id: &str) -> Result<Program> {
        let row = sqlx::query("SELECT * FROM programs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        rows::program(&row.ok_or(StorageError::NotFound("program"))?)
    }

    /// Replaces a program's loyalty rules (validated by the caller). Cards show tiers and
    /// expiry, so one publish job per published template tells every holder, as a new
    /// template version would.
    pub async fn update_program_rules(&self, id: &str, rules: &LoyaltyRules) -> Result<Program> {
        let now = now_ms();
        let (_turn, mut tx) = self.write_tx().await?;
        // A tier that members hold may be renamed (same id), never dropped from under them.
        let held = sqlx::query(
            "SELECT tier, COUNT(*) AS n FROM members WHERE program_id = $1 AND tier IS NOT NULL GROUP BY tier",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for row in &held {
            let tier: String = row.try_get("tier")?;
            if rules.tier(Some(&tier)).is_none() {
                return Err(StorageError::Rejected(format!(
                    "{} members hold tier id {tier:?}, which these rules drop; keep a level with \"id\": {tier:?} (rename it by changing its name)",
                    rows::int(row, "n")?
                )));
            }
        }
        let done = sqlx::query("UPDATE programs SET rules = $2 WHERE id = $1")
            .bind(id)
            .bind(serde_json::to_string(rules).expect("rules serialise"))
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("program"));
        }
        designer::republish_program(&mut tx, id, now).await?;
        tx.commit().await?;
        self.get_program(id).await
    }

    pub async fn find_program_by_slug(&self, slug: &str) -> Result<Option<Program>> {
        let row = sqlx::query("SELECT * FROM programs WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::program).transpose()
    }

    // ---- templates ----

    /// Stores a validated design and its rendered images as version 1 of a new template.
    pub async fn insert_template(
        &self,
        program_id: &str,
        name: &str,
        design: &TemplateDesign,
        images: &[(String, Vec<u8>)],
    ) -> Result<Template> {
        let now = now_ms();
        let template = Template {
            id: new_id(),
            program_id: program_id.into(),
            name: name.into(),
            version: 1,
            design: design.clone(),
            updated_at: now,
        };
        let design_json = serde_json::to_string(design).expect("design serialises");
        let (_turn, mut tx) = self.write_tx().await?;
        let exists = sqlx::query("SELECT 1 FROM programs WHERE id = $1")
            .bind(program_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StorageError::NotFound("program"));
        }
        sqlx::query(
            "INSERT INTO templates (id, program_id, name, version, design, created_at, updated_at)
             VALUES ($1, $2, $3, 1, $4, $5, $5)",
        )
        .bind(&template.id)
        .bind(program_id)
        .bind(name)
        .bind(&design_json)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        upsert_images(&mut tx, &template.id, images).await?;
        designer::snapshot_version(&mut tx, &template.id, 1, &design_json, None, now).await?;
        tx.commit().await?;
        Ok(template)
    }

    pub async fn get_template(&self, id: &str) -> Result<Template> {
        let row = sqlx::query("SELECT * FROM templates WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        rows::template(&row.ok_or(StorageError::NotFound("template"))?)
    }

    /// The program's most recently created template that is published and not archived,
    /// which new members get.
    pub async fn latest_template(&self, program_id: &str) -> Result<Option<Template>> {
        let row = sqlx::query(
            "SELECT * FROM templates WHERE program_id = $1 AND version > 0 AND archived_at IS NULL
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(program_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::template).transpose()
    }

    /// Replaces some of a template's image files and bumps its version; a publish job tells
    /// every holder in batches, so the change never holds the write lock over all of them.
    pub async fn replace_template_images(
        &self,
        template_id: &str,
        images: &[(String, Vec<u8>)],
    ) -> Result<Template> {
        let now = now_ms();
        let (_turn, mut tx) = self.write_tx().await?;
        let updated = sqlx::query(
            "UPDATE templates SET version = version + 1, updated_at = $2 WHERE id = $1",
        )
        .bind(template_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StorageError::NotFound("template"));
        }
        upsert_images(&mut tx, template_id, images).await?;
        let row = sqlx::query("SELECT * FROM templates WHERE id = $1")
            .bind(template_id)
            .fetch_one(&mut *tx)
            .await?;
        let template = rows::template(&row)?;
        let design_json = serde_json::to_string(&template.design).expect("design serialises");
        designer::snapshot_version(
            &mut tx,
            template_id,
            template.version,
            &design_json,
            None,
            now,
        )
        .await?;
        designer::start_publish_job(&mut tx, template_id, template.version, now).await?;
        tx.commit().await?;
        Ok(template)
    }

    pub async fn template_images(&self, template_id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = sqlx::query("SELECT file_name, bytes FROM template_images WHERE template_id = $1 ORDER BY file_name")
            .bind(template_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("file_name")?, r.try_get("bytes")?)))
            .collect()
    }

    // ---- members and passes ----

    /// Creates many members and their passes on `template` in one transaction, a few hundred
    /// rows per statement: imports and load tests. Barcodes, serials and tokens are random as
    /// in `insert_member`.
    pub async fn insert_members_bulk(
        &self,
        program: &Program,
        template: &Template,
        new: &[NewMember],
    ) -> Result<Vec<(Member, Pass)>> {
        let now = now_ms();
        let made: Vec<(Member, Pass)> = new
            .iter()
            .map(|m| new_member_and_pass(program, template, m, now))
            .collect();
        let (_turn, mut tx) = self.write_tx().await?;
        for chunk in made.chunks(BULK_CHUNK) {
            let members = values_list(chunk.len(), 5, "0, $1");
            let sql = format!(
                "INSERT INTO members (id, program_id, display_name, external_id, barcode, points, created_at) VALUES {members}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for (m, _) in chunk {
                q = q
                    .bind(&m.id)
                    .bind(&m.program_id)
                    .bind(&m.display_name)
                    .bind(&m.external_id)
                    .bind(&m.barcode);
            }
            q.execute(&mut *tx).await.map_err(|e| {
                conflict(e, || {
                    "a member with one of these external_ids exists already in this program".into()
                })
            })?;
            insert_passes(&mut tx, chunk.iter().map(|(_, p)| p), now).await?;
            self.queue_google(&mut tx, chunk.iter().map(|(m, _)| m.id.as_str()), now)
                .await?;
        }
        tx.commit().await?;
        Ok(made)
    }

    /// Creates a member with an unguessable barcode and their pass on `template`, together.
    pub async fn insert_member(
        &self,
        program: &Program,
        template: &Template,
        m: &NewMember,
    ) -> Result<(Member, Pass)> {
        let (member, pass) = new_member_and_pass(program, template, m, now_ms());
        let (_turn, mut tx) = self.write_tx().await?;
        self.insert_member_rows(&mut tx, &member, &pass, None)
            .await?;
        tx.commit().await?;
        Ok((member, pass))
    }

    /// Inserts a member (with contact details, if any), their pass, and their Google queue row.
    pub(super) async fn insert_member_rows(
        &self,
        tx: &mut Transaction<'static, Any>,
        member: &Member,
        pass: &Pass,
        contact: Option<(&Option<String>, &Option<String>, &Option<String>)>,
    ) -> Result<()> {
        let (email, phone, birthday) = contact.unwrap_or((&None, &None, &None));
        sqlx::query(
            "INSERT INTO members (id, program_id, display_name, external_id, barcode, points, created_at, email, phone, birthday)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9)",
        )
        .bind(&member.id)
        .bind(&member.program_id)
        .bind(&member.display_name)
        .bind(&member.external_id)
        .bind(&member.barcode)
        .bind(member.created_at)
        .bind(email)
        .bind(phone)
        .bind(birthday)
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            conflict(e, || {
                format!("a member with external_id {:?} exists already in this program", member.external_id.as_deref().unwrap_or(""))
            })
        })?;
        sqlx::query(
            "INSERT INTO passes (serial_number, member_id, template_id, pass_type_identifier, authentication_token, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&pass.serial_number)
        .bind(&pass.member_id)
        .bind(&pass.template_id)
        .bind(&pass.pass_type_identifier)
        .bind(&pass.authentication_token)
        .bind(pass.created_at)
        .execute(&mut **tx)
        .await?;
        self.queue_google(tx, std::iter::once(member.id.as_str()), pass.created_at)
            .await
    }

    pub async fn get_member(&self, id: &str) -> Result<Member> {
        let row = sqlx::query("SELECT * FROM members WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        rows::member(&row.ok_or(StorageError::NotFound("member"))?)
    }

    pub async fn find_member_by_external_id(
        &self,
        program_id: &str,
        external_id: &str,
    ) -> Result<Option<Member>> {
        let row = sqlx::query("SELECT * FROM members WHERE program_id = $1 AND external_id = $2")
            .bind(program_id)
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::member).transpose()
    }

    pub async fn find_member_by_barcode(&self, barcode: &str) -> Result<Option<Member>> {
        let row = sqlx::query("SELECT * FROM members WHERE barcode = $1")
            .bind(barcode)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::member).transpose()
    }

    /// A program's members in creation order, after the cursor `(created_at, id)`.
    pub async fn list_members(
        &self,
        program_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Member>> {
        let (at, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(
            "SELECT * FROM members WHERE program_id = $1 AND (created_at > $2 OR (created_at = $2 AND id > $3))
             ORDER BY created_at, id LIMIT $4",
        )
        .bind(program_id)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::member).collect()
    }

    pub async fn pass_for_member(&self, member_id: &str) -> Result<Pass> {
        let row = sqlx::query("SELECT * FROM passes WHERE member_id = $1")
            .bind(member_id)
            .fetch_optional(&self.pool)
            .await?;
        rows::pass(&row.ok_or(StorageError::NotFound("pass"))?)
    }

    pub async fn get_pass(&self, serial_number: &str) -> Result<Pass> {
        let row = sqlx::query("SELECT * FROM passes WHERE serial_number = $1")
            .bind(serial_number)
            .fetch_optional(&self.pool)
            .await?;
        rows::pass(&row.ok_or(StorageError::NotFound("pass"))?)
    }

    /// The sum of a member's ledger entries (what the stored balance must always equal).
    pub async fn ledger_sum(&self, member_id: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) AS total FROM ledger_entries WHERE member_id = $1",
        )
        .bind(member_id)
        .fetch_one(&self.pool)
        .await?;
        rows::int(&row, "total")
    }

    // ---- API keys ----

    pub async fn insert_api_key(
        &self,
        id: &str,
        name: &str,
        role: Role,
        secret_hash: &str,
        limits: crate::ledger::PointLimits,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, role, secret_hash, created_at, max_points, max_points_per_day)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
            .bind(id)
            .bind(name)
            .bind(role.as_str())
            .bind(secret_hash)
            .bind(now_ms())
            .bind(limits.per_operation)
            .bind(limits.per_day)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::api_key).transpose()
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::api_key).collect()
    }

    pub async fn revoke_api_key(&self, id: &str) -> Result<()> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("active API key"));
        }
        Ok(())
    }

    /// Benchmark baseline table; see `bench_bare_insert`.
    #[cfg(feature = "bench")]
    pub async fn bench_prepare(&self) -> Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS bench_bare (id TEXT PRIMARY KEY, v BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Benchmark baseline: one single-row INSERT in its own write transaction, opened the way
    /// ledger writes open theirs.
    #[cfg(feature = "bench")]
    pub async fn bench_bare_insert(&self, id: &str, value: i64) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        sqlx::query("INSERT INTO bench_bare (id, v) VALUES ($1, $2)")
            .bind(id)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Copies the WAL back into the SQLite database file without blocking writers (a PASSIVE
    /// checkpoint); the server's `checkpoint` worker runs it every second, and imports after each
    /// batch. No-op on
    /// PostgreSQL.
    pub async fn checkpoint(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// One round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Row counts of the main tables, for tests that prove a rejected request stored nothing.
    pub async fn counts(&self) -> Result<[i64; 4]> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM programs) AS p, (SELECT COUNT(*) FROM templates) AS t,
                    (SELECT COUNT(*) FROM members) AS m, (SELECT COUNT(*) FROM passes) AS s",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok([
            rows::int(&row, "p")?,
            rows::int(&row, "t")?,
            rows::int(&row, "m")?,
            rows::int(&row, "s")?,
        ])
    }
}

async fn upsert_images(
    tx: &mut Transaction<'static, Any>,
    template_id: &str,
    images: &[(String, Vec<u8>)],
) -> Result<()> {
    for (name, bytes) in images {
        sqlx::query("DELETE FROM template_images WHERE template_id = $1 AND file_name = $2")
            .bind(template_id)
            .bind(name)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO template_images (template_id, file_name, bytes) VALUES ($1, $2, $3)",
        )
        .bind(template_id)
        .bind(name)
        .bind(bytes.as_slice())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A new member with an unguessable barcode (128 bits) and their pass (a 128-bit serial and a
/// 256-bit token), not yet stored.
fn new_member_and_pass(
    program: &Program,
    template: &Template,
    m: &NewMember,
    now: i64,
) -> (Member, Pass) {
    let member = Member {
        id: new_id(),
        program_id: program.id.clone(),
        display_name: m.display_name.clone(),
        external_id: m.external_id.clone(),
        barcode: random_barcode(16),
        points: 0,
        tier: None,
        created_at: now,
    };
    let pass = Pass {
        serial_number: random_token(16),
        member_id: member.id.clone(),
        template_id: template.id.clone(),
        pass_type_identifier: program.pass_type_identifier.clone(),
        authentication_token: random_token(32),
        created_at: now,
        updated_at: now,
        last_fetched_at: None,
    };
    (member, pass)
}

/// New passes, created and updated at `now`, in one multi-row INSERT (at most `BULK_CHUNK`).
async fn insert_passes(
    tx: &mut Transaction<'static, Any>,
    passes: impl ExactSizeIterator<Item = &Pass>,
    now: i64,
) -> Result<()> {
    let values = values_list(passes.len(), 5, "$1, $1");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO passes (serial_number, member_id, template_id, pass_type_identifier, authentication_token, created_at, updated_at) VALUES {values}"
    )))
    .bind(now);
    for p in passes {
        q = q
            .bind(&p.serial_number)
            .bind(&p.member_id)
            .bind(&p.template_id)
            .bind(&p.pass_type_identifier)
            .bind(&p.authentication_token);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Rows per multi-row INSERT of `insert_members_bulk` (5 parameters each, under SQLite's
/// 32,766 and PostgreSQL's 65,535).
const BULK_CHUNK: usize = 500;

/// `($2, $3, …, tail), (…)`: `rows` tuples of `per_row` numbered parameters after the shared
/// `$1`, each followed by `tail`.
fn values_list(rows: usize, per_row: usize, tail: &str) -> String {
    (0..rows)
        .map(|r| {
            let params: Vec<String> = (0..per_row)
                .map(|k| format!("${}", 2 + r * per_row + k))
                .collect();
            format!("({}, {tail})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Time-ordered ids (UUIDv7): new rows land at the end of each primary-key index instead of on
/// a random page, which keeps ledger writes cheap as tables grow.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn conflict(e: sqlx::Error, message: impl FnOnce() -> String) -> StorageError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StorageError::Conflict(message()),
        _ => StorageError::Database(e),
    }
}

/// The file of a `sqlite:` URL; `None` for PostgreSQL and in-memory databases.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && !path.contains(":memory:")).then(|| path.into())
}

fn io_error(what: &std::path::Path, e: std::io::Error) -> StorageError {
    StorageError::Database(sqlx::Error::Configuration(
        format!("{}: {e}", what.display()).into(),
    ))
}

/// Creates `path` (owner-only, 0600) when missing.
fn create_private(path: &std::path::Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))
}

/// Waits for the exclusive lock on `<db>.lock`; released when the file is dropped.
async fn lock_file(db: std::path::PathBuf) -> Result<std::fs::File> {
    let mut name = db.into_os_string();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    tokio::task::spawn_blocking(move || {
        let f = create_private(&path)?;
        f.lock().map_err(|e| io_error(&path, e))?;
        Ok(f)
    })
    .await
    .map_err(|e| {
        io_error(
            std::path::Path::new("the migration lock"),
            std::io::Error::other(e),
        )
    })?
}

/// Makes sure a SQLite file's folder exists and that the file is created when missing, readable
/// by its owner only (it holds pass tokens; SQLite gives its -wal and -shm files the same mode).
fn prepare_sqlite_url(url: &str) -> Result<String> {
    let Some(path) = sqlite_file(url) else {
        return Ok(url.to_string());
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    create_private(&path)?;
    Ok(if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}
