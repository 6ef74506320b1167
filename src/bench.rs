//! `tessera bench passes`: complete signed passes per second on one core, next to bare PKCS#7
//! signatures of the same manifest with the same key, measured in the same run. The signature
//! is the irreducible cost of a pass; the ratio shows what everything else costs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::domain::{Member, Pass, Program, Template};
use crate::passes::apple::bundle::{self, PreparedAssets};
use crate::passes::apple::dev_certs::DevAuthority;
use crate::passes::apple::images;
use crate::passes::apple::pass_json::{self, PassContent};

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
    };
    let render = |member: &Member| {
        pass_json::render(&PassContent {
            program: &program,
            template: &template,
            member,
            pass: &pass,
            web_service_url: "https://example.com/passkit",
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
