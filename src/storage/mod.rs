//! The storage layer: the only place with SQL.
//!
//! One implementation serves SQLite (default, WAL) and PostgreSQL through sqlx's `Any` driver
//! over a portable schema (text ids, BIGINT milliseconds, 0/1 booleans); the database URL picks
//! the backend. Writes that must not interleave open `BEGIN IMMEDIATE` on SQLite, so a writer
//! takes the lock up front instead of failing to upgrade a read lock halfway.

mod api_keys;
mod audit;
#[cfg(feature = "bench")]
mod bench;
mod cache;
mod changes;
mod cockpit;
mod designer;
mod enrollment;
mod erasure;
pub mod events;
mod export;
mod google;
mod leases;
mod ledger;
mod lifecycle;
mod member_search;
mod members;
mod notify;
mod passkit;
mod profile;
mod programs;
mod retention;
mod rows;
mod sealed;
mod staff;
mod stats;
mod throttles;
pub mod webhooks;
mod withdrawal;

pub use api_keys::{ApiKeyRecord, Role};
pub use audit::{AffectedMember, AuditEntry, AuditFilter};
pub use cockpit::{Cumulative, DAY_MS, DailyFigures, WINDOWS, day_of, windows_due};
pub use designer::{BUSY as PUBLISH_BUSY, Draft, PublishJob, TemplateSummary, VersionInfo};
pub use enrollment::{ConsentRecord, ImportBatch, ImportRow, JoinMatch, PendingJoin};
pub use erasure::Erasure;
pub use export::{SentMessage, WalletEvent};
pub use google::{GoogleMessage, GoogleObject, GooglePending, GoogleSyncStatus};
pub use ledger::{Actor, Captured, MemberStanding, NewHold, OutboxRow};
pub use member_search::{MemberFilter, MemberLine, QueryKind};
pub use notify::CHANNEL as NOTIFY_CHANNEL;
pub use passkit::{DueChange, PushSettlement, PushTarget, Registration};
pub use profile::ProfileChange;
pub use retention::{LogPurge, MONTH_MS};
pub use sealed::Resealed;
pub use staff::{StaffSession, StaffUser};
pub use stats::QueueStats;

use std::sync::Arc;

use tokio::sync::Notify;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Transaction};

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
    /// Another server holds this SQLite file: SQLite allows one per file.
    #[error(
        "the database file {file} is in use by another tessera server (pid {pid}); SQLite allows one server per file: stop it first, or use PostgreSQL to run several instances"
    )]
    InUse { file: String, pid: String },
    /// A conditional write named a version that is no longer current.
    #[error("the {what} changed since it was read (it is at version {current} now)")]
    Stale { what: &'static str, current: i64 },
    /// A member's sealed e-mail or phone could not be sealed or opened (`crate::privacy`).
    #[error("personal data: {0}")]
    Privacy(String),
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
    /// This process's owner id on the rows its workers claim (`leases`).
    instance: Arc<str>,
    /// How long a claim lasts, in ms (`server.worker_lease_ms`).
    lease_ms: Arc<std::sync::atomic::AtomicI64>,
    /// Sends `NOTIFY` to the other instances (`notify`).
    announcer: Arc<notify::Announcer>,
    /// The database URL, for the `LISTEN` connection (never logged: it may hold a password).
    url: Arc<str>,
    /// This instance's counters for `/metrics`.
    metrics: Arc<crate::metrics::Metrics>,
    /// Set by `release_leases`: no more claims from this instance.
    released: Arc<std::sync::atomic::AtomicBool>,
    /// Passes and registrations the PassKit web service reads (`cache`).
    cache: Arc<cache::PassCache>,
    /// Seals and opens members' e-mail and phone (`sealed`); set by `set_key_ring`.
    keys: Arc<std::sync::RwLock<Option<Arc<crate::privacy::KeyRing>>>>,
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
    ///
    /// While a server holds the file (`connect_as(.., Access::Serve)`), a one-off command
    /// (`api-key`, `user`, `import`, ...) connects without migrating: the server did.
    pub async fn connect(url: &str) -> Result<Store> {
        Ok(Self::connect_as(url, Access::Other).await?.0)
    }

    /// Connects as `access`; on a SQLite file the returned lock keeps other servers out for as
    /// long as it is held (`serve` holds it until it exits). A server or `migrate` on a file a
    /// server holds is refused with `StorageError::InUse`, naming the file and the server's pid.
    pub async fn connect_as(url: &str, access: Access) -> Result<(Store, Option<ProcessLock>)> {
        let lock = match sqlite_file(url) {
            Some(path) => lock_file(path, access).await?,
            None => None,
        };
        let store = Self::connect_without_migrating(url).await?;
        if lock.is_some() || sqlite_file(url).is_none() {
            store.migrate().await?;
        }
        let keep = match (access, lock) {
            (Access::Serve, Some(mut lock)) => {
                lock.serving()?;
                Some(lock)
            }
            _ => None,
        };
        Ok((store, keep))
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
                                // 4 MiB page cache per connection, and 16 MiB for all
                                // of SQLite in this process (the limit is process-wide):
                                // past it, caches recycle their pages instead of growing,
                                // so a publish to every holder does not fill 8 caches.
                                "PRAGMA cache_size = -4096",
                                "PRAGMA soft_heap_limit = 16777216",
                                // No checkpoint inside a commit: it would run while the
                                // committing writer (often a till) holds the write lock.
                                // `Store::checkpoint` runs beside the writers instead.
                                "PRAGMA wal_autocheckpoint = 0",
                                // The WAL file is cut back to 64 MiB after a checkpoint.
                                "PRAGMA journal_size_limit = 67108864",
                                // Deleted and overwritten content is zeroed, so an erased
                                // member's data leaves the file (`erasure`).
                                "PRAGMA secure_delete = ON",
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
        // SQLite has one process per file, so every write is this instance's own: the cache
        // is live from the start. PostgreSQL's goes live when the `LISTEN` connection is up.
        let cache = Arc::new(cache::PassCache::default());
        cache.set_live(backend == Backend::Sqlite);
        Ok(Store {
            cache,
            pool,
            backend,
            changed: Arc::new(Notify::new()),
            google: Arc::default(),
            postings: Arc::default(),
            writers: Arc::default(),
            instance: leases::new_instance_id().into(),
            lease_ms: Arc::new(leases::DEFAULT_LEASE_MS.into()),
            announcer: Arc::default(),
            url: url.into(),
            metrics: Arc::default(),
            released: Arc::default(),
            keys: Arc::default(),
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

    /// ` FOR UPDATE` on PostgreSQL, to lock a row read in a write transaction; nothing on
    /// SQLite, where `BEGIN IMMEDIATE` already holds the database's one write lock.
    fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
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

/// Time-ordered ids (UUIDv7): new rows land at the end of each primary-key index instead of on
/// a random page, which keeps ledger writes cheap as tables grow.
/// A new audit row's id (time-ordered), for rows buffered before they are written.
pub fn new_audit_id() -> String {
    new_id()
}

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
fn create_private(path: &std::path::Path, flags: i32) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| io_error(path, e))
}

/// Who opens a SQLite file, for `<db>.lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `tessera serve`: the one server on the file, holding the lock until it exits.
    Serve,
    /// `tessera migrate`: takes turns with other migrations, refused while a server runs.
    Migrate,
    /// Anything else: migrates when the file is free, and connects as it is while a server
    /// holds it.
    Other,
}

/// The exclusive lock on `<db>.lock`, held by a server for its lifetime; released on drop
/// (and by the kernel when the process dies, so a crash leaves no stale lock).
pub struct ProcessLock(std::fs::File);

impl ProcessLock {
    /// The server's migrations are done: one-off commands may use the file from now on.
    fn serving(&mut self) -> Result<()> {
        use std::io::{Seek, Write};
        let f = &mut self.0;
        let done = f
            .set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| write!(f, "serve {}", std::process::id()))
            .and_then(|()| f.flush());
        done.map_err(|e| io_error(std::path::Path::new("the database lock"), e))
    }
}

/// Takes the exclusive lock on `<db>.lock`, writing `<role> <pid>` into the file so a refused
/// process can name the holder. Migrations wait for each other; a server is never waited for:
/// `Serve` and `Migrate` are refused with `InUse`, `Other` gets `None` (use the file as it is).
async fn lock_file(db: std::path::PathBuf, access: Access) -> Result<Option<ProcessLock>> {
    // One lock per file whatever path names it: symlinks and `..` resolved (the folder when
    // the file does not exist yet).
    let db = std::fs::canonicalize(&db).unwrap_or_else(|_| match (db.parent(), db.file_name()) {
        (Some(dir), Some(file)) if !dir.as_os_str().is_empty() => std::fs::canonicalize(dir)
            .map(|d| d.join(file))
            .unwrap_or(db.clone()),
        _ => db.clone(),
    });
    let mut name = db.clone().into_os_string();
    name.push(".lock");
    let path = std::path::PathBuf::from(name);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek, Write};
        // A symlink planted at the lock's name is refused, never followed and truncated.
        let mut f = create_private(&path, libc::O_NOFOLLOW)?;
        loop {
            match f.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path, e)),
            }
            // The holder writes its role right after locking: read until it is there.
            let mut holder = String::new();
            for _ in 0..100 {
                holder.clear();
                let mut reader = std::fs::File::open(&path).map_err(|e| io_error(&path, e))?;
                reader
                    .read_to_string(&mut holder)
                    .map_err(|e| io_error(&path, e))?;
                if !holder.trim().is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let holder = holder.trim().to_string();
            // A server holds the lock for good: "starting" while it migrates, then "serve".
            let starting = holder.strip_prefix("starting ");
            if let Some(pid) = holder.strip_prefix("serve ").or(starting) {
                return match access {
                    // A one-off command waits for the server's migrations, then uses the file.
                    Access::Other if starting.is_some() => {
                        std::thread::sleep(std::time::Duration::from_millis(25));
                        continue;
                    }
                    Access::Other => Ok(None),
                    Access::Serve | Access::Migrate => Err(StorageError::InUse {
                        file: db.display().to_string(),
                        pid: pid.to_string(),
                    }),
                };
            }
            // A migration (or a process that is just starting): wait for it, then look again.
            f.lock().map_err(|e| io_error(&path, e))?;
            f.unlock().map_err(|e| io_error(&path, e))?;
        }
        let role = match access {
            Access::Serve => "starting",
            Access::Migrate | Access::Other => "migrate",
        };
        f.set_len(0).map_err(|e| io_error(&path, e))?;
        f.rewind().map_err(|e| io_error(&path, e))?;
        write!(f, "{role} {}", std::process::id()).map_err(|e| io_error(&path, e))?;
        f.flush().map_err(|e| io_error(&path, e))?;
        Ok(Some(ProcessLock(f)))
    })
    .await
    .map_err(|e| {
        io_error(
            std::path::Path::new("the database lock"),
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
    create_private(&path, 0)?;
    Ok(if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}
