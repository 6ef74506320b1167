//! `tessera bench publish`: a template change told to every holder (a publish job that marks
//! each pass changed and queues its push, and the dispatcher pushing every device) while a
//! till earns every 250 ms. The baseline is the same till with nothing else running, in the
//! same process just before. It also samples the process's resident memory.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::domain::{NewMember, now_ms};
use crate::ledger::{Operation, Origin};
use crate::passes::apple::dev_certs::DevAuthority;
use crate::passes::apple::images::{self, ImageKind};
use crate::push::standin::StandIn;
use crate::storage::Store;

/// How often the till earns.
const TILL_EVERY: Duration = Duration::from_millis(250);
/// How long after the last push the memory the server keeps is read: the `memory` worker
/// hands freed heap back every 10 s.
const SETTLE: Duration = Duration::from_secs(12);
/// Till earns in the baseline.
const BASELINE_EARNS: usize = 20;

#[derive(Debug, Serialize)]
pub struct PublishBench {
    pub holders: usize,
    /// From the change until every holder's pass was marked changed.
    pub job_seconds: f64,
    /// From the change until every device was pushed.
    pub pushed_seconds: f64,
    pub marked_changed: i64,
    pub devices_pushed: usize,
    pub baseline: Latency,
    pub during: Latency,
    /// `during.p99_ms / baseline.p99_ms`.
    pub p99_ratio: f64,
    pub rss_idle_mb: f64,
    pub rss_peak_mb: f64,
    /// When the last push was settled.
    pub rss_drained_mb: f64,
    /// `SETTLE` later, the till still earning: what the server keeps.
    pub rss_after_mb: f64,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub earns: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn latency(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    let round = |v: f64| (v * 10.0).round() / 10.0;
    Latency {
        earns: ms.len(),
        p50_ms: round(at(0.5)),
        p99_ms: round(at(0.99)),
        max_ms: round(*ms.last().unwrap_or(&0.0)),
    }
}

/// Resident memory of this process in MB (Linux), 0 where unknown.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
}

pub async fn publish(holders: usize) -> anyhow::Result<PublishBench> {
    let dir =
        std::env::temp_dir().join(format!("tessera-bench-{}", crate::secret::random_token(6)));
    let result = run(&dir, holders).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(dir: &std::path::Path, holders: usize) -> anyhow::Result<PublishBench> {
    let certs = dir.join("data").join("dev-certs");
    DevAuthority::open_or_create(&certs)?;
    let standin = StandIn::start(&certs).await;
    let mut config = crate::config::Config {
        database_url: format!("sqlite://{}", dir.join("bench.db").display()),
        data_dir: dir.join("data"),
        ..Default::default()
    };
    config.push.apns_url = Some(standin.url());
    config.push.apns_root_certificate = Some(standin.write_ca(dir));
    let store = Store::connect(&config.database_url).await?;
    let state = crate::app::AppState::new(config, store.clone())?;
    let mut files = Vec::new();
    for (kind, bytes) in crate::demo::images() {
        files.extend(images::process(kind, &bytes)?);
    }
    let (program, template) = super::bench_program(&store, Default::default(), &files).await?;

    // Every holder with one registered device, then the till's own member.
    for start in (0..holders).step_by(10_000) {
        let new: Vec<NewMember> = (start..(start + 10_000).min(holders))
            .map(|i| NewMember {
                display_name: format!("M{i}"),
                external_id: None,
            })
            .collect();
        let created = store.insert_members_bulk(&program, &template, &new).await?;
        let regs: Vec<(String, String, String)> = created
            .iter()
            .enumerate()
            .map(|(k, (_, pass))| {
                let i = start + k;
                (
                    format!("device-{i}"),
                    format!("{i:064x}"),
                    pass.serial_number.clone(),
                )
            })
            .collect();
        store.register_devices(&regs, now_ms()).await?;
    }
    let (till, _) = store
        .insert_member(
            &program,
            &template,
            &NewMember {
                display_name: "Till".into(),
                external_id: None,
            },
        )
        .await?;
    let earn = || {
        let store = store.clone();
        let member = till.id.clone();
        async move {
            let start = Instant::now();
            store
                .post(
                    &member,
                    &Operation::EarnPoints { points: 1 },
                    &Origin::default(),
                    None,
                    None,
                    now_ms(),
                )
                .await?;
            anyhow::Ok(start.elapsed().as_secs_f64() * 1000.0)
        }
    };

    let workers = crate::app::spawn_workers(&state)?;
    let mut tick = tokio::time::interval(TILL_EVERY);
    let mut baseline = Vec::new();
    for _ in 0..BASELINE_EARNS {
        tick.tick().await;
        baseline.push(earn().await?);
    }
    // The till's own pushes (no device) are settled by now; nothing else runs.
    let rss_idle = rss_mb();

    // The stand-in's log is counted and emptied as it goes, so its memory is not the server's.
    let counted = std::cell::Cell::new(0usize);
    let pushed = || {
        let mut seen = standin.seen.lock().expect("stand-in lock");
        counted.set(counted.get() + seen.len());
        seen.clear();
        counted.get()
    };
    let pushed_before = pushed();
    let start = Instant::now();
    let changed_at = now_ms();
    let new_logo = images::process(
        ImageKind::Logo,
        &images::sample_png(480, 150, [20, 160, 90]),
    )?;
    let changed = store
        .replace_template_images(&template.id, &new_logo)
        .await?;
    let mut during = Vec::new();
    let mut rss_peak = rss_idle;
    let mut job_seconds = None;
    let pushed_seconds = loop {
        tick.tick().await;
        during.push(earn().await?);
        rss_peak = rss_peak.max(rss_mb());
        if job_seconds.is_none()
            && store
                .latest_publish_job(&template.id)
                .await?
                .is_some_and(|j| j.version == changed.version && j.status == "done")
        {
            job_seconds = Some(start.elapsed().as_secs_f64());
        }
        if pushed() - pushed_before >= holders {
            break start.elapsed().as_secs_f64();
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "the change did not reach every device within 10 minutes"
        );
    };
    let job_seconds = job_seconds.unwrap_or(pushed_seconds);
    // Let the last settlements land before memory is read.
    while !store.pending_outbox(1).await?.is_empty() {
        tick.tick().await;
    }
    let rss_drained = rss_mb();
    let drained_at = Instant::now();
    while drained_at.elapsed() < SETTLE {
        tick.tick().await;
        earn().await?;
    }
    let rss_after = rss_mb();
    let marked_changed = store.passes_changed_since(&template.id, changed_at).await?;
    workers.iter().for_each(|w| w.abort());
    let baseline = latency(baseline);
    let during = latency(during);
    Ok(PublishBench {
        holders,
        job_seconds: (job_seconds * 10.0).round() / 10.0,
        pushed_seconds: (pushed_seconds * 10.0).round() / 10.0,
        marked_changed,
        devices_pushed: pushed() - pushed_before,
        p99_ratio: ((during.p99_ms / baseline.p99_ms.max(0.1)) * 100.0).round() / 100.0,
        baseline,
        during,
        rss_idle_mb: rss_idle,
        rss_peak_mb: rss_peak,
        rss_drained_mb: rss_drained,
        rss_after_mb: rss_after,
    })
}
