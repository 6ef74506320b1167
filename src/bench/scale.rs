//! `tessera bench scale`: one and then two instances on one PostgreSQL database, earns posted
//! over HTTP by a load generator in this process (round robin over the instances), pushes
//! delivered to the local APNs stand-in. Reports each run's throughput, pushes per change,
//! devices pushed more often than their pass changed, devices whose last change was never
//! pushed, and lost updates (points accepted but not in the balances).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::domain::{NewMember, now_ms};
use crate::passes::apple::dev_certs::DevAuthority;
use crate::push::standin::StandIn;
use crate::storage::{Role, Store};

#[derive(Debug, Serialize)]
pub struct ScaleBench {
    pub members: usize,
    pub seconds: f64,
    /// Requests in flight from the load generator.
    pub concurrency: usize,
    pub runs: Vec<ScaleRun>,
    /// Earns per second with two instances / with one.
    pub two_over_one: f64,
}

#[derive(Debug, Serialize)]
pub struct ScaleRun {
    pub instances: usize,
    pub earns_per_sec: f64,
    pub earns: u64,
    /// Answers other than 201 (each is a failed earn, not retried).
    pub failed: u64,
    pub pushes: usize,
    /// Pushes / earns: under 1 where a device's changes coalesced into one push.
    pub pushes_per_change: f64,
    /// Devices pushed more often than their pass changed (double pushes): goal 0.
    pub devices_pushed_too_often: usize,
    /// Devices with changes whose last push arrived before their last change was requested
    /// (the last change never pushed): goal 0.
    pub devices_missing_last_change: usize,
    /// Points accepted (201) but missing from their member's balance, summed per member: goal 0.
    pub lost_points: i64,
    /// Members whose balance is below their accepted earns: goal 0.
    pub members_short: usize,
    /// Members whose balance is above their accepted earns (only a failed request that
    /// committed anyway can do that; a double credit would too).
    pub members_over: usize,
    /// From the end of the load until the outbox was empty.
    pub drain_ms: u128,
}

/// Runs the benchmark against the PostgreSQL server `admin_url` points at (a fresh database per
/// run, dropped afterwards).
pub async fn scale(
    admin_url: &str,
    members: usize,
    seconds: f64,
    concurrency: usize,
) -> anyhow::Result<ScaleBench> {
    let mut runs = Vec::new();
    for instances in [1, 2] {
        runs.push(run(admin_url, instances, members, seconds, concurrency).await?);
    }
    let two_over_one = (runs[1].earns_per_sec / runs[0].earns_per_sec * 1000.0).round() / 1000.0;
    Ok(ScaleBench {
        members,
        seconds,
        concurrency,
        runs,
        two_over_one,
    })
}

fn token_of(i: usize) -> String {
    format!("{:064x}", 0x0005_ca1e_0000_0000_u64 + i as u64)
}

async fn run(
    admin_url: &str,
    instances: usize,
    members: usize,
    seconds: f64,
    concurrency: usize,
) -> anyhow::Result<ScaleRun> {
    let dir =
        std::env::temp_dir().join(format!("tessera-bench-{}", crate::secret::random_token(6)));
    let certs = dir.join("data").join("dev-certs");
    let ca = DevAuthority::open_or_create(&certs)?;
    let standin = StandIn::start(&certs).await;
    let (store, url, drop_db) = super::temp_postgres_url(admin_url).await?;
    let config = {
        let mut c = crate::config::Config {
            database_url: url.clone(),
            data_dir: dir.join("data"),
            ..Default::default()
        };
        c.push.apns_url = Some(standin.url());
        c.push.apns_root_certificate = Some(standin.write_ca(&dir));
        c.log = "warn".into();
        c
    };

    // The program, `members` members with one registered device each, and an API key.
    let ptid = super::BENCH_PTID;
    let _ = ca.identity(ptid, "TESSERADEV")?;
    let (program, template) = super::bench_program(&store, Default::default(), &[]).await?;
    let new: Vec<NewMember> = (0..members)
        .map(|i| NewMember {
            display_name: format!("M{i}"),
            external_id: None,
        })
        .collect();
    let made = store.insert_members_bulk(&program, &template, &new).await?;
    let regs: Vec<(String, String, String)> = made
        .iter()
        .enumerate()
        .map(|(i, (_, pass))| {
            (
                format!("device-{i}"),
                token_of(i),
                pass.serial_number.clone(),
            )
        })
        .collect();
    store.register_devices(&regs, now_ms()).await?;
    let member_ids: Vec<String> = made.into_iter().map(|(m, _)| m.id).collect();
    let (_, key) =
        crate::api::auth::create_key(&store, "bench", Role::Admin, Default::default()).await?;

    // The instances: each its own store, state, server and workers, as `tessera serve`.
    let mut bases = Vec::new();
    let mut running = Vec::new();
    for _ in 0..instances {
        let store = Store::connect(&url).await?;
        let state = crate::app::AppState::new(config.clone(), store.clone())?;
        let workers = crate::app::spawn_workers(&state)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        bases.push(format!("http://{}", listener.local_addr()?));
        let limits = state.config.server.clone();
        let app = crate::app::router(state);
        let server = tokio::spawn(async move {
            crate::server::serve(listener, app, &limits, std::future::pending()).await
        });
        running.push((store, workers, server));
    }

    // The load: `concurrency` clients, each posting earns round robin over the instances.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let accepted: Arc<Vec<AtomicU64>> = Arc::new((0..members).map(|_| AtomicU64::new(0)).collect());
    let last_request: Arc<std::sync::Mutex<HashMap<usize, Instant>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..concurrency {
        let (http, key, bases, ids) =
            (http.clone(), key.clone(), bases.clone(), member_ids.clone());
        let (accepted, last_request, failed) =
            (accepted.clone(), last_request.clone(), failed.clone());
        clients.spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                // Client c takes members c, c + concurrency, ...: no two clients share one, so
                // "last request" per member is well defined.
                let m = (c + n * concurrency) % ids.len();
                let base = &bases[(c + n) % bases.len()];
                n += 1;
                last_request
                    .lock()
                    .expect("bench lock")
                    .insert(m, Instant::now());
                let sent = http
                    .post(format!("{base}/api/v1/members/{}/transactions", ids[m]))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", format!("scale-{c}-{n}"))
                    .json(&serde_json::json!({"type": "earn", "points": 1}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => {
                        accepted[m].fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();

    // Every change pushed: wait for the outbox to drain (at most a minute).
    let load_done = Instant::now();
    loop {
        let stats = store.queue_stats().await?;
        if stats.outbox_depth == 0 || load_done.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_ms = load_done.elapsed().as_millis();

    let earns: u64 = accepted.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    // Per member: a double credit on one cannot hide a loss on another. A request that failed
    // (not 201) may still have committed, so only balances below the accepted earns are lost.
    let (mut lost_points, mut members_short, mut members_over) = (0i64, 0usize, 0usize);
    for (i, id) in member_ids.iter().enumerate() {
        let balance = store.get_member(id).await?.points;
        let accepted = accepted[i].load(Ordering::Relaxed) as i64;
        if balance < accepted {
            lost_points += accepted - balance;
            members_short += 1;
        } else if balance > accepted {
            members_over += 1;
        }
    }
    let seen = standin.seen.lock().expect("stand-in lock").clone();
    let mut pushes: HashMap<String, Vec<Instant>> = HashMap::new();
    for s in &seen {
        if let Some(token) = s.path.rsplit('/').next() {
            pushes.entry(token.to_string()).or_default().push(s.at);
        }
    }
    let last_request = last_request.lock().expect("bench lock").clone();
    let (mut too_often, mut missing) = (0, 0);
    for (i, changes) in accepted.iter().enumerate() {
        let changes = changes.load(Ordering::Relaxed) as usize;
        let got = pushes
            .get(&token_of(i))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if got.len() > changes {
            too_often += 1;
        }
        if changes > 0 {
            let last_push = got.iter().max();
            let asked = last_request.get(&i);
            if last_push.is_none() || asked.is_some_and(|a| last_push.is_some_and(|p| p < a)) {
                missing += 1;
            }
        }
    }

    for (store, workers, server) in running {
        server.abort();
        workers.iter().for_each(|w| w.abort());
        let _ = store.release_leases().await;
        store.close().await;
    }
    store.close().await;
    drop_db.await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ScaleRun {
        instances,
        earns_per_sec: (earns as f64 / elapsed).round(),
        earns,
        failed: failed.load(Ordering::Relaxed),
        pushes: seen.len(),
        pushes_per_change: if earns == 0 {
            0.0
        } else {
            (seen.len() as f64 / earns as f64 * 1000.0).round() / 1000.0
        },
        devices_pushed_too_often: too_often,
        devices_missing_last_change: missing,
        lost_points,
        members_short,
        members_over,
        drain_ms,
    })
}
