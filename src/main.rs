//! The `tessera` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tessera::app::{self, AppState};
use tessera::config::{self, Config};
use tessera::passes::apple::dev_certs::{self, DevAuthority};
use tessera::storage::{Role, Store};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Self-hosted Apple Wallet and Google Wallet loyalty cards"
)]
struct Cli {
    /// A TOML configuration file (see `tessera gen-config`).
    #[arg(long, short, global = true, env = "TESSERA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Seed the demo program, template and member first, and log the demo pass link.
        #[arg(long)]
        demo: bool,
    },
    /// Bring the database schema up to date, then exit.
    Migrate,
    /// Print a commented example configuration.
    GenConfig,
    /// Create a throwaway root CA, intermediate and Pass Type ID certificate for local use.
    DevCerts {
        /// Folder to write the PEM files to.
        #[arg(long, default_value = "./data/dev-certs")]
        out: PathBuf,
        #[arg(long, default_value = tessera::passes::apple::DEV_PASS_TYPE_IDENTIFIER)]
        pass_type_id: String,
        #[arg(long, default_value = tessera::passes::apple::DEV_TEAM_IDENTIFIER)]
        team_id: String,
    },
    /// Seed the demo program, template and member (idempotently) and print the demo card as JSON.
    Demo,
    /// Write a sample PNG of the minimum size Apple asks for (`icon`, `logo` or `strip`), for a
    /// first template.
    SampleImage {
        /// icon, logo or strip.
        kind: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Manage API keys.
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    /// Manage staff accounts for the web UI.
    #[command(subcommand)]
    User(UserCommand),
    /// Import members from CSV (external_id,name,email,phone,points), idempotently on
    /// external_id; prints the report as JSON.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The program's slug.
        #[arg(long)]
        program: String,
        /// Write every imported member's personal install link here, as CSV.
        #[arg(long)]
        links: Option<PathBuf>,
    },
    /// Read the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// The key ring that seals members' e-mail and phone at rest (`[privacy]`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Measure throughput; prints JSON. Only in builds with `--features bench`.
    #[cfg(feature = "bench")]
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a staff account. The password is read from standard input (one line) when it is
    /// not a terminal; otherwise a random one is generated and printed once.
    Create {
        #[arg(long)]
        email: String,
        /// admin, marketer or cashier.
        #[arg(long)]
        role: Role,
        /// On the scan page: the most points one operation may move.
        #[arg(long)]
        max_points: Option<i64>,
        /// On the scan page: the most points this account may move in a UTC day.
        #[arg(long)]
        max_points_per_day: Option<i64>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Put a new key in front of the ring's file (the old keys stay, so their values stay
    /// readable). Then restart every server and run `tessera keys rotate`. With `privacy.key`
    /// set instead of a file, prints a new key to put in front of that value.
    New,
    /// Re-seal every member's e-mail and phone under the ring's current key (and seal any an
    /// earlier version stored plain), 500 members per short transaction; safe to run again,
    /// and beside running servers once they all run with the new ring. Prints JSON.
    Rotate,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key; the key is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        role: Role,
        #[arg(long, default_value = "cli")]
        name: String,
        /// For cashier keys: the most points one purchase or redemption may move.
        #[arg(long)]
        max_points: Option<i64>,
        /// For cashier keys: the most points its purchases and redemptions may move in a UTC day.
        #[arg(long)]
        max_points_per_day: Option<i64>,
    },
    /// Revoke a key by its id (the part after `tsk_` and before the next `_`).
    Revoke { id: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// For a breach notice: the members whose data was read or changed in a period, optionally
    /// by one API key or staff account, as CSV (member_id, external_id, first_at, last_at,
    /// reads, writes; times in RFC 3339).
    Affected {
        /// Start of the period: RFC 3339 (2026-12-03T10:00:00Z), milliseconds since the epoch,
        /// or a span back from now (24h, 7d).
        #[arg(long)]
        since: String,
        /// End of the period (same forms; default now).
        #[arg(long)]
        until: Option<String>,
        /// Only requests by this actor: an API key's id or a staff account's id.
        #[arg(long)]
        actor: Option<String>,
    },
}

#[cfg(feature = "bench")]
#[derive(Subcommand)]
enum BenchCommand {
    /// A template change to every holder (publish job and pushes) while a till earns every
    /// 250 ms: the till's latency against its baseline, and the process's memory.
    Publish {
        #[arg(long, default_value_t = 100_000)]
        holders: usize,
    },
    /// Signed passes per second on one core vs bare PKCS#7 signatures per second.
    Passes {
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// APNs pushes per second from the dispatcher vs a bare HTTP/2 loop, and commit-to-push latency.
    Push {
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        #[arg(long, default_value_t = 1000)]
        samples: usize,
        /// Alternating bare/dispatcher rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// PassKit `GET registrations` and `GET pass` (unchanged) requests per second under wrk vs a
    /// trivial 204 handler of the same server.
    Passkit {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// One and two instances on one PostgreSQL database under HTTP earns: throughput, pushes
    /// per change, double pushes, missed pushes and lost updates.
    Scale {
        /// A PostgreSQL server URL with a database to connect to; each run creates and drops
        /// its own database there.
        #[arg(long)]
        postgres_url: String,
        #[arg(long, default_value_t = 2_000)]
        members: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Members imported from CSV per second vs the bare bulk insert of as many members, and the
    /// idempotent second run.
    Import {
        #[arg(long, default_value_t = 100_000)]
        members: usize,
        /// Also measure PostgreSQL (a server URL with a database to connect to).
        #[arg(long)]
        postgres_url: Option<String>,
    },
    /// Idempotent earn postings per second vs bare INSERT transactions, 1 and 8 writers.
    Ledger {
        #[arg(long, default_value_t = 12.0)]
        seconds: f64,
        /// Also measure PostgreSQL: a server URL with a database to connect to; the benchmark
        /// creates and drops its own database there.
        #[arg(long)]
        postgres_url: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tessera::memory::limit_arenas();
    let cli = Cli::parse();
    if let Command::GenConfig = cli.command {
        print!("{}", config::EXAMPLE);
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref())?;
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(cli.command, config))
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::GenConfig => unreachable!("handled before loading the configuration"),
        Command::Serve { demo } => serve(config, demo).await,
        Command::Migrate => {
            let (store, _) =
                Store::connect_as(&config.database_url, tessera::storage::Access::Migrate)
                    .await
                    .context("connecting to the database")?;
            store.close().await;
            eprintln!("database is up to date");
            Ok(())
        }
        Command::DevCerts {
            out,
            pass_type_id,
            team_id,
        } => {
            let ca = DevAuthority::open_or_create(&out)?;
            let pass = ca.write_pass_certificate(&pass_type_id, &team_id)?;
            let dir = out.display();
            println!(
                "# Development certificates in {dir}: they verify against {dir}/{} only",
                dev_certs::ROOT_CA_FILE
            );
            println!("# and never install on a real device. To use them as a configured identity:");
            println!("[apple]");
            println!("certificate = \"{}\"", pass.display());
            println!("private_key = \"{dir}/{}\"", dev_certs::PASS_KEY_FILE);
            println!(
                "wwdr_certificate = \"{dir}/{}\"",
                dev_certs::INTERMEDIATE_FILE
            );
            Ok(())
        }
        Command::SampleImage { kind, out } => {
            let kind = tessera::passes::apple::images::ImageKind::parse(&kind)
                .ok_or_else(|| anyhow::anyhow!("the kind is icon, logo or strip, not {kind:?}"))?;
            let (_, png) = tessera::demo::images()
                .into_iter()
                .find(|(k, _)| *k == kind)
                .expect("a sample of every kind");
            std::fs::write(&out, png).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote a sample {} to {}", kind.name(), out.display());
            Ok(())
        }
        Command::Demo => {
            let state = open(config).await?;
            let card = tessera::demo::seed(&state).await?;
            println!("{}", serde_json::to_string_pretty(&card)?);
            state.store.close().await;
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Create {
            role,
            name,
            max_points,
            max_points_per_day,
        }) => {
            check_limits(max_points, max_points_per_day)?;
            let store = Store::connect(&config.database_url).await?;
            let limits = tessera::ledger::PointLimits {
                per_operation: max_points,
                per_day: max_points_per_day,
            };
            let (id, key) = tessera::api::auth::create_key(&store, &name, role, limits).await?;
            cli_audit(&store, "tessera api-key create", "api_key", &id, Vec::new()).await;
            eprintln!(
                "created {} key {id}; it is shown only this once:",
                role.as_str()
            );
            println!("{key}");
            store.close().await;
            Ok(())
        }
        Command::User(UserCommand::Create {
            email,
            role,
            max_points,
            max_points_per_day,
        }) => {
            check_limits(max_points, max_points_per_day)?;
            use std::io::IsTerminal;
            let (password, generated) = if std::io::stdin().is_terminal() {
                (tessera::secret::random_token(15), true)
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            };
            let store = Store::connect(&config.database_url).await?;
            let user = tessera::web::staff::create_user(&store, &email, role, &password).await?;
            if max_points.is_some() || max_points_per_day.is_some() {
                store
                    .set_staff_limits(&user.id, max_points, max_points_per_day)
                    .await?;
            }
            cli_audit(&store, "tessera user create", "staff", &user.id, Vec::new()).await;
            eprintln!("created {} account {}", user.role.as_str(), user.email);
            if generated {
                eprintln!("its password, shown only this once:");
                println!("{password}");
            }
            store.close().await;
            Ok(())
        }
        Command::Import {
            file,
            program,
            links,
        } => {
            let state = open(config).await?;
            let program = state
                .store
                .find_program_by_slug(&program)
                .await?
                .with_context(|| format!("no program with slug {program:?}"))?;
            let input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} members ({per_sec}, {eta} left)",
                )
                .expect("a valid progress template"),
            );
            let report =
                tessera::enrollment::import::run(&state, &program, input, |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                })
                .await?;
            bar.finish_and_clear();
            let touched = report.links.iter().map(|l| l.member_id.clone()).collect();
            cli_audit(
                &state.store,
                "tessera import",
                "program",
                &program.id,
                touched,
            )
            .await;
            if let Some(path) = links {
                std::fs::write(&path, tessera::enrollment::import::links_csv(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!(
                    "wrote {} install links to {}",
                    report.links.len(),
                    path.display()
                );
            }
            for e in &report.errors {
                eprintln!("line {}: {}", e.line, e.message);
            }
            eprintln!(
                "{} rows: {} created, {} unchanged, {} refused",
                report.rows,
                report.created,
                report.unchanged,
                report.errors.len()
            );
            let summary = serde_json::json!({
                "rows": report.rows, "created": report.created, "unchanged": report.unchanged,
                "errors": report.errors,
            });
            println!("{}", serde_json::to_string_pretty(&summary)?);
            state.store.close().await;
            Ok(())
        }
        Command::ApiKey(ApiKeyCommand::Revoke { id }) => {
            let store = Store::connect(&config.database_url).await?;
            store.revoke_api_key(&id).await?;
            cli_audit(&store, "tessera api-key revoke", "api_key", &id, Vec::new()).await;
            eprintln!("revoked key {id}");
            store.close().await;
            Ok(())
        }
        Command::Audit(AuditCommand::Affected {
            since,
            until,
            actor,
        }) => {
            let now = tessera::domain::now_ms();
            let since = tessera::domain::parse_instant(&since, now)
                .map_err(|m| anyhow::anyhow!("--since: {m}"))?;
            let until = match until {
                Some(u) => tessera::domain::parse_instant(&u, now)
                    .map_err(|m| anyhow::anyhow!("--until: {m}"))?,
                None => now + 1,
            };
            let store = Store::connect(&config.database_url).await?;
            let affected = store.audit_affected(since, until, actor.as_deref()).await?;
            let mut out = csv::Writer::from_writer(std::io::stdout());
            out.write_record([
                "member_id",
                "external_id",
                "first_at",
                "last_at",
                "reads",
                "writes",
            ])?;
            for a in &affected {
                out.write_record([
                    a.member_id.as_str(),
                    a.external_id.as_deref().unwrap_or(""),
                    &rfc3339(a.first_at),
                    &rfc3339(a.last_at),
                    &a.reads.to_string(),
                    &a.writes.to_string(),
                ])?;
            }
            out.flush()?;
            eprintln!(
                "{} members read or changed between {} and {}{}",
                affected.len(),
                rfc3339(since),
                rfc3339(until),
                actor.map(|a| format!(" by {a}")).unwrap_or_default()
            );
            store.close().await;
            Ok(())
        }
        Command::Keys(command) => keys(command, config).await,
        #[cfg(feature = "bench")]
        Command::Bench(command) => bench(command).await,
    }
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Records an administrative command in the audit log, its actor the OS user who ran it. A
/// failure to write it is reported, not fatal: the command's own change is done.
async fn cli_audit(
    store: &Store,
    action: &str,
    target_kind: &str,
    target_id: &str,
    members: Vec<String>,
) {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".to_string());
    let entry = tessera::storage::AuditEntry {
        id: String::new(),
        at: 0,
        actor_kind: "cli".to_string(),
        actor_id: user.clone(),
        actor_label: format!("{user} (command line)"),
        action: action.to_string(),
        target_kind: Some(target_kind.to_string()),
        target_id: Some(target_id.to_string()),
        client_ip: None,
        status: 1,
        is_write: true,
        members,
    };
    if let Err(e) = store.append_audit(&entry).await {
        eprintln!("warning: the audit log did not record this command: {e}");
    }
}

async fn keys(command: KeysCommand, config: Config) -> anyhow::Result<()> {
    use tessera::privacy::{KeyRing, Source};
    if let (KeysCommand::New, None) = (&command, &config.privacy.key) {
        let path = config
            .privacy
            .key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join(tessera::privacy::DEFAULT_KEY_FILE));
        if !path.exists() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let key = KeyRing::new_key();
            tessera::privacy::write_private(&path, &format!("{}\n", key.expose()), true)?;
            eprintln!(
                "made the key ring {} with key {}; back it up with the database",
                path.display(),
                KeyRing::parse(key.expose())?.current()
            );
            return Ok(());
        }
    }
    let (ring, source, _) = KeyRing::from_config(&config.privacy, &config.data_dir)
        .context("loading the key ring for personal data ([privacy])")?;
    match command {
        KeysCommand::New => match source {
            Source::File(path) => {
                let id = tessera::privacy::add_key_to_file(&path)?;
                eprintln!(
                    "key {id} is now first in {} (before {}); restart every server with it, then run `tessera keys rotate`",
                    path.display(),
                    ring.ids().join(", ")
                );
                Ok(())
            }
            Source::Value => {
                let key = KeyRing::new_key();
                let id = KeyRing::parse(key.expose())?.current().to_string();
                eprintln!(
                    "a new key {id}, shown only this once: put it first in privacy.key (TESSERA_PRIVACY__KEY), before the keys there now ({}), restart every server, then run `tessera keys rotate`:",
                    ring.ids().join(", ")
                );
                println!("{}", key.expose());
                Ok(())
            }
        },
        KeysCommand::Rotate => {
            // Beside a server on a SQLite file, this waits for its migrations and then writes
            // in short batches (one-off commands never touch passes).
            let store = Store::connect(&config.database_url)
                .await
                .context("connecting to the database")?;
            store.set_key_ring(std::sync::Arc::new(ring));
            let done = store.reseal_contacts(false).await?;
            if done.were_plain > 0 {
                // An upgrade: the plain rows' bytes must leave PostgreSQL's pages too.
                store.compact_members().await?;
            }
            store.close().await;
            if done.left == 0 {
                eprintln!(
                    "re-sealed {} members; every e-mail and phone is under key {}: older keys may leave the ring",
                    done.members, done.key
                );
            } else {
                eprintln!(
                    "re-sealed {} members; {} still under another key (a server with an older ring wrote them): run it again",
                    done.members, done.left
                );
            }
            println!("{}", serde_json::to_string_pretty(&done)?);
            Ok(())
        }
    }
}

#[cfg(feature = "bench")]
async fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Publish { holders } => {
            let report = tessera::bench::publish(holders).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Import {
            members,
            postgres_url,
        } => {
            let report = tessera::bench::import(postgres_url.as_deref(), members).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Ledger {
            seconds,
            postgres_url,
        } => {
            let report = tessera::bench::ledger(postgres_url.as_deref(), seconds).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Scale {
            postgres_url,
            members,
            seconds,
            concurrency,
        } => {
            let report =
                tessera::bench::scale(&postgres_url, members, seconds, concurrency).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Passkit {
            seconds,
            connections,
            rounds,
        } => {
            let report = tessera::bench::passkit(seconds, connections, rounds).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Push {
            devices,
            samples,
            rounds,
        } => {
            let report = tessera::bench::push(devices, samples, rounds).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Passes { seconds } => {
            let report =
                tokio::task::spawn_blocking(move || tessera::bench::passes(seconds)).await??;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

/// The application for a one-off command (`demo`, `import`): refused when the key ring does
/// not hold every key the database's sealed values need (a command run without the server's
/// `[privacy]` settings would otherwise seal under a key of its own that no server has).
async fn open(config: Config) -> anyhow::Result<AppState> {
    let store = Store::connect(&config.database_url)
        .await
        .context("connecting to the database")?;
    let state = AppState::new(config, store)?;
    state
        .store
        .check_key_ring()
        .await
        .context("checking the key ring for personal data ([privacy]): give this command the server's configuration")?;
    Ok(state)
}

async fn serve(config: Config, demo: bool) -> anyhow::Result<()> {
    let listen = config.listen;
    // On SQLite, held until the server exits: a second server or a `migrate` is refused.
    let (store, _lock) = Store::connect_as(&config.database_url, tessera::storage::Access::Serve)
        .await
        .context("connecting to the database")?;
    let state = AppState::new(config, store)?;
    state
        .store
        .check_key_ring()
        .await
        .context("checking the key ring for personal data ([privacy])")?;
    // An earlier version stored e-mail and phone plain: sealed before the first request, so
    // every member is found by the keyed hash.
    let sealed = state
        .store
        .reseal_contacts(true)
        .await
        .context("sealing the e-mail addresses and phone numbers stored plain")?;
    if sealed.members > 0 {
        tracing::info!(
            members = sealed.members,
            key = %sealed.key,
            "sealed the e-mail addresses and phone numbers an earlier version stored plain"
        );
        // PostgreSQL keeps the replaced rows' bytes in the table's pages until they are
        // rewritten; SQLite's secure_delete has already zeroed them.
        state
            .store
            .compact_members()
            .await
            .context("rewriting the members table without the plain values")?;
    }
    match state.cards.signers() {
        tessera::passes::apple::Signers::Dev(ca) => tracing::warn!(
            root_ca = %ca.root_ca_path().display(),
            "no Apple signing identity configured: signing with a development identity; \
             these passes will NOT install on real devices (see certs.example/)"
        ),
        tessera::passes::apple::Signers::Configured(identity) => {
            if let Some(days) = identity.days_until_expiry()
                && days < 90
            {
                tracing::warn!(
                    days,
                    "the Pass Type ID or WWDR certificate expires soon; renew it before passes stop installing"
                );
            }
        }
    }
    if demo {
        let card = tessera::demo::seed(&state)
            .await
            .context("seeding the demo")?;
        tracing::info!(member_id = %card.member_id, "demo card ready: {}", card.pass_url);
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "tessera listening");
    let workers = app::spawn_workers(&state)?;
    app::run(state.clone(), listener, app::shutdown_signal()).await?;
    workers.iter().for_each(|w| w.abort());
    // Other instances take this one's claimed rows at once instead of after the lease (and
    // this store claims nothing more, should a worker not have stopped yet).
    if let Err(e) = state.store.release_leases().await {
        tracing::warn!(error = %e, "giving back claimed work failed; other instances take it when the lease runs out");
    }
    if let Err(e) = state.fetches.flush(&state.store).await {
        tracing::warn!(error = %e, "recording the last pass downloads failed");
    }
    if let Err(e) = state.audit.flush(&state.store).await {
        tracing::error!(error = %e, "writing the last audit rows failed");
    }
    state.store.close().await;
    Ok(())
}

/// `--max-points` and `--max-points-per-day`, when given, within 1 to 1,000,000,000.
fn check_limits(per_operation: Option<i64>, per_day: Option<i64>) -> anyhow::Result<()> {
    use tessera::ledger::{MAX_POINTS, grouped};
    for (flag, v) in [
        ("--max-points", per_operation),
        ("--max-points-per-day", per_day),
    ] {
        anyhow::ensure!(
            v.is_none_or(|n| (1..=MAX_POINTS).contains(&n)),
            "{flag} must be between 1 and {}",
            grouped(MAX_POINTS)
        );
    }
    Ok(())
}
