//! `tessera bench passes`: complete signed passes per second on one core, next to bare PKCS#7
//! signatures of the same manifest with the same key, measured in the same run. The signature
//! is the irreducible cost of a pass; the ratio shows what everything else costs.

use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

mod import;
mod publish;
mod scale;
pub use import::{ImportBench, import};
pub use publish::{PublishBench, publish};
pub use scale::{ScaleBench, scale};

use crate::domain::{Member, NewMember, NewProgram, Pass, Program, Template, now_ms};
use crate::ledger::{Idempotency, Operation, Origin};
use crate::passes::apple::bundle::{self, PreparedAssets};
use crate::passes::apple::dev_certs::DevAuthority;
use crate::passes::apple::images;
use crate::passes::apple::pass_json::{self, PassContent};
use crate::storage::Store;

#[derive(Debug, Serialize)]
pub struct PassBench {
    pub bare_signatures_per_sec: f64,
    pub passes_per_sec: f64,
    pub ratio: f64,
    pub pass_bytes: usize,
    pub rounds: u32,
    pub seconds_per_side: f64,
}

/// Alternates bare-signing and full-pass rounds so drift in CPU speed hits both alike.
pub fn passes(seconds: f64) -> anyhow::Result<PassBench> {
    let dir =
        std::env::temp_dir().join(format!("tessera-bench-{}", crate::secret::random_token(6)));
    let ca = DevAuthority::open_or_create(&dir)?;
    let result = run(&ca, seconds);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(ca: &DevAuthority, seconds: f64) -> anyhow::Result<PassBench> {
    let program = Program {
        id: "bench".into(),
        slug: "bench".into(),
        name: "Tessera Coffee".into(),
        pass_type_identifier: "pass.dev.tessera.bench".into(),
        team_identifier: "TESSERADEV".into(),
        organization_name: "Tessera Coffee".into(),
        rules: Default::default(),
        created_at: 0,
    };
    let identity = ca.identity(&program.pass_type_identifier, &program.team_identifier)?;
    let design = crate::demo::design().validate()?;
    let template = Template {
        id: "t".into(),
        program_id: "bench".into(),
        name: "t".into(),
        version: 1,
        design,
        updated_at: 0,
    };
    let mut files = Vec::new();
    for (kind, bytes) in crate::demo::images() {
        files.extend(images::process(kind, &bytes)?);
    }
    let assets = PreparedAssets::new(1, files);
    let mut member = Member {
        id: "m".into(),
        program_id: "bench".into(),
        display_name: "Ada Lovelace".into(),
        external_id: Some("crm-1".into()),
        barcode: crate::secret::random_barcode(16),
        points: 0,
        tier: None,
        created_at: 0,
    };
    let pass = Pass {
        serial_number: crate::secret::random_token(16),
        member_id: "m".into(),
        template_id: "t".into(),
        pass_type_identifier: program.pass_type_identifier.clone(),
        authentication_token: crate::secret::random_token(32),
        created_at: 0,
        updated_at: 0,
        last_fetched_at: None,
        download_token: "d".into(),
        ended_at: None,
    };
    let render = |member: &Member| {
        pass_json::render(&PassContent {
            program: &program,
            template: &template,
            member,
            pass: &pass,
            web_service_url: "https://example.com/passkit",
            standing: Default::default(),
            state: crate::domain::CardState::Active,
            expires_at: None,
            account_url: None,
        })
    };
    let manifest = bundle::manifest(&render(&member), &assets);
    let rounds = 5u32;
    let per_round = Duration::from_secs_f64(seconds / rounds as f64);
    let (mut bare_n, mut bare_t, mut full_n, mut full_t) =
        (0u64, Duration::ZERO, 0u64, Duration::ZERO);
    let mut pass_bytes = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        while start.elapsed() < per_round {
            black_box(identity.sign(black_box(&manifest))?);
            bare_n += 1;
        }
        bare_t += start.elapsed();
        let start = Instant::now();
        while start.elapsed() < per_round {
            // A different balance each time, as a stream of updates would have.
            member.points += 1;
            let json = render(&member);
            pass_bytes = black_box(bundle::build(&json, &assets, &identity)?).len();
            full_n += 1;
        }
        full_t += start.elapsed();
    }
    let bare = bare_n as f64 / bare_t.as_secs_f64();
    let full = full_n as f64 / full_t.as_secs_f64();
    Ok(PassBench {
        bare_signatures_per_sec: bare.round(),
        passes_per_sec: full.round(),
        ratio: (full / bare * 1000.0).round() / 1000.0,
        pass_bytes,
        rounds,
        seconds_per_side: seconds,
    })
}

#[derive(Debug, Serialize)]
pub struct LedgerBench {
    pub backend: &'static str,
    pub writers: usize,
    pub bare_insert_tx_per_sec: f64,
    pub ledger_earn_tx_per_sec: f64,
    pub ratio: f64,
    /// Checkout transactions: a hold of 1 point, then its capture (two transactions each).
    pub hold_capture_tx_per_sec: f64,
    pub hold_capture_ratio: f64,
}

/// `tessera bench ledger`: idempotent earn postings per second through the storage layer next to
/// bare single-row INSERT transactions on the same backend, with 1 and 8 concurrent writers. Each
/// backend gets a fresh database (a temporary SQLite file; a PostgreSQL database created on the
/// server `postgres_admin_url` points at and dropped afterwards).
pub async fn ledger(
    postgres_admin_url: Option<&str>,
    seconds: f64,
) -> anyhow::Result<Vec<LedgerBench>> {
    let mut rows = Vec::new();
    let dir =
        std::env::temp_dir().join(format!("tessera-bench-{}", crate::secret::random_token(6)));
    std::fs::create_dir_all(&dir)?;
    let sqlite = Store::connect(&format!("sqlite://{}", dir.join("bench.db").display())).await?;
    rows.extend(ledger_on(&sqlite, "sqlite", seconds).await?);
    sqlite.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(admin_url) = postgres_admin_url {
        let (store, drop) = temp_postgres(admin_url).await?;
        let result = ledger_on(&store, "postgres", seconds).await;
        store.close().await;
        drop.await?;
        rows.extend(result?);
    }
    Ok(rows)
}

/// The benchmarks' pass type identifier (the development CA signs for it).
const BENCH_PTID: &str = "pass.dev.tessera.bench";

/// The program "bench" with `rules` and one template of the demo design with `images`.
async fn bench_program(
    store: &Store,
    rules: crate::ledger::LoyaltyRules,
    images: &[(String, Vec<u8>)],
) -> anyhow::Result<(Program, Template)> {
    let program = store
        .insert_program(&NewProgram {
            slug: "bench".into(),
            name: "Bench".into(),
            pass_type_identifier: BENCH_PTID.into(),
            team_identifier: "TESSERADEV".into(),
            organization_name: "Bench".into(),
            rules,
        })
        .await?;
    let template = store
        .insert_template(&program.id, "t", &crate::demo::design().validate()?, images)
        .await?;
    Ok((program, template))
}

/// A fresh PostgreSQL database on the server `admin_url` points at, and the future that drops
/// it again.
async fn temp_postgres(
    admin_url: &str,
) -> anyhow::Result<(Store, impl Future<Output = anyhow::Result<()>>)> {
    let (store, _, drop) = temp_postgres_url(admin_url).await?;
    Ok((store, drop))
}

/// `temp_postgres` and the new database's URL.
async fn temp_postgres_url(
    admin_url: &str,
) -> anyhow::Result<(Store, String, impl Future<Output = anyhow::Result<()>>)> {
    let name = format!("tessera_bench_{}", crate::secret::random_token(6));
    let admin = Store::connect_without_migrating(admin_url).await?;
    admin
        .execute_admin(&format!("CREATE DATABASE {name}"))
        .await?;
    let (base, _) = admin_url
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("postgres URL needs a database name"))?;
    let url = format!("{base}/{name}");
    let store = Store::connect(&url).await?;
    let drop = async move {
        admin
            .execute_admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        admin.close().await;
        Ok(())
    };
    Ok((store, url, drop))
}

async fn ledger_on(
    store: &Store,
    backend: &'static str,
    seconds: f64,
) -> anyhow::Result<Vec<LedgerBench>> {
    store.bench_prepare().await?;
    // Realistic rules: expiry and tiers, so every earn also checks the tier window.
    let (program, template) = bench_program(store, crate::demo::rules(), &[]).await?;
    let mut members = Vec::new();
    for i in 0..8 {
        let new = NewMember {
            display_name: format!("M{i}"),
            external_id: None,
        };
        members.push(store.insert_member(&program, &template, &new).await?.0.id);
    }
    let members = Arc::new(members);
    let mut rows = Vec::new();
    for writers in [1usize, 8] {
        let rounds = 3;
        let per_round = Duration::from_secs_f64(seconds / rounds as f64 / 2.0);
        let (mut bare, mut ledger) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
        let mut checkout = (0u64, Duration::ZERO);
        for round in 0..rounds {
            let s = store.clone();
            let r = run_writers(writers, per_round, move |w, i| {
                let s = s.clone();
                async move {
                    s.bench_bare_insert(&format!("{writers}-{round}-{w}-{i}"), i as i64)
                        .await
                        .map_err(Into::into)
                }
            })
            .await?;
            bare = (bare.0 + r.0, bare.1 + r.1);
            let checkout_members = members.clone();
            let (s, members) = (store.clone(), members.clone());
            let r = run_writers(writers, per_round, move |w, i| {
                let (s, members) = (s.clone(), members.clone());
                async move {
                    let key = format!("{writers}-{round}-{w}-{i}");
                    let origin = Origin {
                        external_ref: Some(key.clone()),
                        channel: Some("pos".into()),
                        ..Origin::default()
                    };
                    let idem = Idempotency {
                        api_key_id: "bench".into(),
                        key,
                        request_hash: "h".into(),
                    };
                    let op = Operation::EarnPurchase { amount_minor: 1234 };
                    s.post(
                        &members[w],
                        &op,
                        &origin,
                        Some("bench"),
                        Some(&idem),
                        now_ms(),
                    )
                    .await?;
                    Ok(())
                }
            })
            .await?;
            ledger = (ledger.0 + r.0, ledger.1 + r.1);
            // A checkout: reserve a point (idempotent), then capture it, as a till would.
            let (s, members) = (store.clone(), checkout_members);
            let r = run_writers(writers, per_round, move |w, i| {
                let (s, members) = (s.clone(), members.clone());
                async move {
                    let key = format!("hold-{writers}-{round}-{w}-{i}");
                    let idem = |key: String| Idempotency {
                        api_key_id: "bench".into(),
                        key,
                        request_hash: "h".into(),
                    };
                    let by = crate::storage::Actor {
                        id: Some("bench"),
                        ..Default::default()
                    };
                    let now = now_ms();
                    let new = crate::storage::NewHold {
                        points: 1,
                        expires_at: now + 600_000,
                        external_ref: Some(&key),
                    };
                    let (hold, _) = s
                        .create_hold(&members[w], &new, by, Some(&idem(key.clone())), now)
                        .await?;
                    s.capture_hold(
                        &hold.id,
                        None,
                        by,
                        Some(&idem(format!("{key}-c"))),
                        now_ms(),
                    )
                    .await?;
                    Ok(())
                }
            })
            .await?;
            // Two transactions per checkout.
            checkout = (checkout.0 + 2 * r.0, checkout.1 + r.1);
        }
        let bare_rate = bare.0 as f64 / bare.1.as_secs_f64();
        let ledger_rate = ledger.0 as f64 / ledger.1.as_secs_f64();
        let checkout_rate = checkout.0 as f64 / checkout.1.as_secs_f64();
        rows.push(LedgerBench {
            backend,
            writers,
            bare_insert_tx_per_sec: bare_rate.round(),
            ledger_earn_tx_per_sec: ledger_rate.round(),
            ratio: (ledger_rate / bare_rate * 1000.0).round() / 1000.0,
            hold_capture_tx_per_sec: checkout_rate.round(),
            hold_capture_ratio: (checkout_rate / bare_rate * 1000.0).round() / 1000.0,
        });
    }
    Ok(rows)
}

/// Runs `writers` concurrent loops of `op(writer, i)` for `duration`; returns (ops, elapsed).
async fn run_writers<F, Fut>(
    writers: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<(u64, Duration)>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while start.elapsed() < duration {
                    op(w, n).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok((total, start.elapsed()))
}

#[derive(Debug, Serialize)]
pub struct PushBench {
    pub devices: usize,
    /// Alternating rounds, so machine noise hits both sides alike.
    pub rounds: Vec<PushRound>,
    /// The median of the rounds' ratios.
    pub ratio_median: f64,
    /// From a ledger write's commit to the sink receiving its push, dispatcher running.
    pub commit_to_push_ms_p50: f64,
    pub commit_to_push_ms_p99: f64,
    pub latency_samples: usize,
}

#[derive(Debug, Serialize)]
pub struct PushRound {
    /// A bare loop of pushes through one `ApnsClient` (256 in flight) into the sink: the mean
    /// of a run just before and one just after the dispatcher's.
    pub bare_pushes_per_sec: f64,
    /// The dispatcher draining one committed change for each of `devices` registered devices.
    pub dispatcher_pushes_per_sec: f64,
    pub ratio: f64,
}

/// `tessera bench push`: all in one process against the local HTTP/2 TLS stand-in (a Rust sink,
/// so the sink does not measure itself), on a temporary SQLite database.
pub async fn push(
    devices: usize,
    latency_samples: usize,
    rounds: usize,
) -> anyhow::Result<PushBench> {
    use crate::push::apns::ApnsClient;
    use crate::push::dispatcher::Dispatcher;
    use crate::push::standin::StandIn;

    let dir =
        std::env::temp_dir().join(format!("tessera-bench-{}", crate::secret::random_token(6)));
    let certs = dir.join("data").join("dev-certs");
    let ca = DevAuthority::open_or_create(&certs)?;
    let standin = StandIn::start(&certs).await;
    let token_of = |i: usize| format!("{i:064x}");
    let seen = || standin.seen.lock().expect("stand-in lock").len();

    // `devices` members, each with one registered device.
    let ptid = BENCH_PTID;
    let mut config = crate::config::Config {
        database_url: format!("sqlite://{}", dir.join("bench.db").display()),
        data_dir: dir.join("data"),
        ..Default::default()
    };
    config.push.apns_url = Some(standin.url());
    config.push.apns_root_certificate = Some(standin.write_ca(&dir));
    config.push.poll_interval_ms = 1000;
    let store = Store::connect(&config.database_url).await?;
    let state = crate::app::AppState::new(config, store.clone())?;
    let (program, template) = bench_program(&store, Default::default(), &[]).await?;
    let mut members = Vec::with_capacity(devices);
    for i in 0..devices {
        let (m, pass) = store
            .insert_member(
                &program,
                &template,
                &NewMember {
                    display_name: format!("M{i}"),
                    external_id: None,
                },
            )
            .await?;
        store
            .register_device(
                &format!("device-{i}"),
                &token_of(i),
                &pass.serial_number,
                now_ms(),
            )
            .await?;
        members.push(m.id);
    }
    let earn = |member: String| {
        let store = store.clone();
        async move {
            store
                .post(
                    &member,
                    &Operation::EarnPoints { points: 1 },
                    &Origin::default(),
                    None,
                    None,
                    now_ms(),
                )
                .await
        }
    };
    let dispatcher = || {
        Dispatcher::from_config(
            store.clone(),
            state.cards.shared_signers(),
            &state.config.push,
        )
        .and_then(|d| d.ok_or_else(|| anyhow::anyhow!("push is off")))
    };

    // Bare: the same client type the dispatcher uses, 256 requests in flight.
    let identity = ca.identity(ptid, "TESSERADEV")?;
    let client = ApnsClient::with_certificate(
        &standin.url(),
        identity.certificate(),
        identity.private_key(),
        Some(&standin.ca),
    )?;
    let mut bare_runs = 0;
    let mut bare = || {
        bare_runs += 1;
        let offset = 1_000_000 * bare_runs;
        let client = client.clone();
        async move {
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            let per = devices.div_ceil(256);
            for w in 0..256 {
                let client = client.clone();
                set.spawn(async move {
                    for i in (w * per)..((w + 1) * per).min(devices) {
                        client.push(ptid, &format!("{:064x}", offset + i)).await;
                    }
                });
            }
            while set.join_next().await.is_some() {}
            devices as f64 / start.elapsed().as_secs_f64()
        }
    };

    let mut results = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // One committed change per member waiting in the outbox.
        for m in &members {
            earn(m.clone()).await?;
        }
        // The dispatcher's run sits between two bare runs, all within a second or so, so a
        // change in machine speed (shared hosts) hits both sides alike.
        let bare_before = bare().await;
        let before = seen();
        let start = Instant::now();
        let running = run_dispatcher(dispatcher()?);
        while seen() < before + devices {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let dispatched = devices as f64 / start.elapsed().as_secs_f64();
        // Let the last batch settle, so the next round starts from an empty outbox.
        while !store.pending_outbox(1).await?.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        running.abort();
        let bare_rate = (bare_before + bare().await) / 2.0;
        results.push(PushRound {
            bare_pushes_per_sec: bare_rate.round(),
            dispatcher_pushes_per_sec: dispatched.round(),
            ratio: (dispatched / bare_rate * 1000.0).round() / 1000.0,
        });
    }

    // Latency: the dispatcher runs as in `serve`; changes arrive one by one.
    let running = run_dispatcher(dispatcher()?);
    let mut committed = Vec::with_capacity(latency_samples);
    for (i, m) in members.iter().take(latency_samples).enumerate() {
        earn(m.clone()).await?;
        committed.push((token_of(i), Instant::now()));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.abort();
    let seen = standin.seen.lock().expect("stand-in lock").clone();
    let mut latencies: Vec<f64> = committed
        .iter()
        .filter_map(|(token, at)| {
            let path = format!("/3/device/{token}");
            seen.iter()
                .filter(|s| s.path == path && s.at >= *at)
                .map(|s| (s.at - *at).as_secs_f64() * 1000.0)
                .next()
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let mut ratios: Vec<f64> = results.iter().map(|r| r.ratio).collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    Ok(PushBench {
        devices,
        ratio_median: ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN),
        rounds: results,
        commit_to_push_ms_p50: (pct(0.5) * 100.0).round() / 100.0,
        commit_to_push_ms_p99: (pct(0.99) * 100.0).round() / 100.0,
        latency_samples: latencies.len(),
    })
}

#[derive(Debug, Serialize)]
pub struct PasskitBench {
    /// `wrk` connections and seconds per measurement.
    pub connections: usize,
    pub seconds: u64,
    pub rounds: Vec<PasskitRound>,
    /// Medians of the rounds' ratios to the trivial handler.
    pub registrations_ratio_median: f64,
    pub pass_ratio_median: f64,
    pub registrations_ratio_layered_median: f64,
    pub pass_ratio_layered_median: f64,
}

#[derive(Debug, Serialize)]
pub struct PasskitRound {
    /// `GET /noop`: a handler of the same server that answers 204 and does nothing else,
    /// outside the router's layers.
    pub noop_per_sec: f64,
    /// `GET /noop-layered`: the same handler behind the layers every real route has.
    pub noop_layered_per_sec: f64,
    /// `GET /passkit/v1/devices/{d}/registrations/{ptid}`: 200 with the device's serial.
    pub registrations_per_sec: f64,
    /// `GET /passkit/v1/passes/{ptid}/{serial}` for an unchanged pass: 200 with its cached
    /// signed bytes.
    pub pass_per_sec: f64,
    pub registrations_ratio: f64,
    pub pass_ratio: f64,
    pub registrations_ratio_layered: f64,
    pub pass_ratio_layered: f64,
}

/// `tessera bench passkit`: the PassKit web service under `wrk` (which must be installed), in
/// alternating rounds next to a trivial 204 handler served by the same router, process and
/// database (a temporary SQLite file).
pub async fn passkit(
    seconds: u64,
    connections: usize,
    rounds: usize,
) -> anyhow::Result<PasskitBench> {
    let dir =
        std::env::temp_dir().join(format!("tessera-bench-{}", crate::secret::random_token(6)));
    let config = crate::config::Config {
        database_url: format!("sqlite://{}", dir.join("bench.db").display()),
        data_dir: dir.join("data"),
        ..Default::default()
    };
    let store = Store::connect(&config.database_url).await?;
    let state = crate::app::AppState::new(config, store.clone())?;
    let card = crate::demo::seed(&state).await?;
    let device = "bench-device";
    store
        .register_device(device, &"ab".repeat(32), &card.serial, now_ms())
        .await?;
    let limits = state.config.server.clone();
    // Two trivial 204 handlers: `/noop` outside the router's layers (the first baseline, as
    // measured since issue 4), `/noop-layered` behind the same layers as every real route
    // (request metrics, the input guard, tracing, timeouts), so its ratio is what the
    // endpoint's own work costs.
    async fn noop() -> axum::http::StatusCode {
        axum::http::StatusCode::NO_CONTENT
    }
    let app = crate::app::router_with(
        state,
        axum::Router::new().route("/noop-layered", axum::routing::get(noop)),
    )
    .route("/noop", axum::routing::get(noop));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    // The server's own accept loop, with its limits, as `tessera serve` runs it.
    let server = tokio::spawn(async move {
        crate::server::serve(listener, app, &limits, std::future::pending()).await
    });

    let auth = format!("Authorization: ApplePass {}", card.auth_token);
    let registrations = format!(
        "{base}/passkit/v1/devices/{device}/registrations/{}",
        card.pass_type_identifier
    );
    let pass = format!(
        "{base}/passkit/v1/passes/{}/{}",
        card.pass_type_identifier, card.serial
    );
    // Check each answer once (and fill the signed-pass cache) before measuring.
    let http = reqwest::Client::new();
    let expect = |url: String, status: u16, with_auth: bool| {
        let (http, token) = (http.clone(), card.auth_token.clone());
        async move {
            let mut req = http.get(&url);
            if with_auth {
                req = req.header("Authorization", format!("ApplePass {token}"));
            }
            let got = req.send().await?.status().as_u16();
            anyhow::ensure!(got == status, "{url} answered {got}, not {status}");
            anyhow::Ok(())
        }
    };
    expect(format!("{base}/noop"), 204, false).await?;
    expect(format!("{base}/noop-layered"), 204, false).await?;
    expect(registrations.clone(), 200, false).await?;
    expect(pass.clone(), 200, true).await?;

    let wrk = |url: String, header: Option<String>| async move {
        tokio::task::spawn_blocking(move || wrk_rate(&url, header.as_deref(), seconds, connections))
            .await?
    };
    let mut results = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let noop = wrk(format!("{base}/noop"), None).await?;
        let layered = wrk(format!("{base}/noop-layered"), None).await?;
        let regs = wrk(registrations.clone(), None).await?;
        let passes = wrk(pass.clone(), Some(auth.clone())).await?;
        let ratio = |a: f64, b: f64| (a / b * 1000.0).round() / 1000.0;
        results.push(PasskitRound {
            noop_per_sec: noop.round(),
            noop_layered_per_sec: layered.round(),
            registrations_per_sec: regs.round(),
            pass_per_sec: passes.round(),
            registrations_ratio: ratio(regs, noop),
            pass_ratio: ratio(passes, noop),
            registrations_ratio_layered: ratio(regs, layered),
            pass_ratio_layered: ratio(passes, layered),
        });
    }
    server.abort();
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let median = |f: fn(&PasskitRound) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Ok(PasskitBench {
        connections,
        seconds,
        registrations_ratio_median: median(|r| r.registrations_ratio),
        pass_ratio_median: median(|r| r.pass_ratio),
        registrations_ratio_layered_median: median(|r| r.registrations_ratio_layered),
        pass_ratio_layered_median: median(|r| r.pass_ratio_layered),
        rounds: results,
    })
}

/// Requests per second `wrk` measured for `url` (one thread), refusing a run with errors or
/// non-2xx answers, which would make a failing endpoint look fast.
fn wrk_rate(
    url: &str,
    header: Option<&str>,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<f64> {
    let mut cmd = std::process::Command::new("wrk");
    cmd.args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .output()
        .map_err(|e| anyhow::anyhow!("running wrk (apt install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {text}");
    anyhow::ensure!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors for {url}:\n{text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no Requests/sec in wrk's output:\n{text}"))
}

/// The dispatcher as `serve` runs it: supervised.
fn run_dispatcher(d: crate::push::dispatcher::Dispatcher) -> tokio::task::JoinHandle<()> {
    let d = std::sync::Arc::new(d);
    crate::supervisor::supervise(&Default::default(), "push", move |beat| {
        let d = d.clone();
        async move { d.run(beat).await }
    })
}
