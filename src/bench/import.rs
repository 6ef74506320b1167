//! `tessera bench import`: members imported from CSV per second (parse, members, passes,
//! opening-balance entries and lots, install links) next to the bare bulk insert of the same
//! number of members and passes on the same backend, measured in the same run; and the second,
//! idempotent run that changes nothing.

use std::time::Instant;

use serde::Serialize;

use crate::app::AppState;
use crate::config::Config;
use crate::domain::{NewMember, NewProgram};
use crate::storage::Store;

#[derive(Debug, Serialize)]
pub struct ImportBench {
    pub backend: &'static str,
    pub members: usize,
    pub bare_members_per_sec: f64,
    pub import_members_per_sec: f64,
    pub ratio: f64,
    /// The second run: every row found by external id, nothing written.
    pub rerun_rows_per_sec: f64,
}

fn csv(n: usize) -> String {
    let mut out = String::with_capacity(n * 48);
    out.push_str("external_id,name,email,phone,points\n");
    for i in 0..n {
        out.push_str(&format!(
            "c{i},Member {i},m{i}@example.com,+3120{i:07},{}\n",
            i % 1000
        ));
    }
    out
}

async fn on(
    store: Store,
    backend: &'static str,
    data_dir: &std::path::Path,
    n: usize,
) -> anyhow::Result<ImportBench> {
    let config = Config {
        database_url: String::new(),
        data_dir: data_dir.to_path_buf(),
        ..Config::default()
    };
    let state = AppState::new(config, store.clone())?;
    let program = |slug: &str| NewProgram {
        slug: slug.into(),
        name: "Bench".into(),
        pass_type_identifier: crate::passes::apple::DEV_PASS_TYPE_IDENTIFIER.into(),
        team_identifier: crate::passes::apple::DEV_TEAM_IDENTIFIER.into(),
        organization_name: "Bench".into(),
        rules: crate::demo::rules(),
    };
    let design = crate::demo::design().validate()?;
    let bare_program = store.insert_program(&program("bare")).await?;
    let bare_template = store
        .insert_template(&bare_program.id, "t", &design, &[])
        .await?;
    let new: Vec<NewMember> = (0..n)
        .map(|i| NewMember {
            display_name: format!("Member {i}"),
            external_id: Some(format!("c{i}")),
        })
        .collect();
    let start = Instant::now();
    for chunk in new.chunks(1000) {
        store
            .insert_members_bulk(&bare_program, &bare_template, chunk)
            .await?;
    }
    let bare = n as f64 / start.elapsed().as_secs_f64();

    let import_program = store.insert_program(&program("import")).await?;
    store
        .insert_template(&import_program.id, "t", &design, &[])
        .await?;
    let file = csv(n);
    let start = Instant::now();
    let report =
        crate::enrollment::import::run(&state, &import_program, file.as_bytes(), |_, _| {}).await?;
    let import = n as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(
        report.created == n && report.errors.is_empty(),
        "the import refused rows: {:?}",
        report.errors.first()
    );
    let start = Instant::now();
    let again =
        crate::enrollment::import::run(&state, &import_program, file.as_bytes(), |_, _| {}).await?;
    let rerun = n as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(
        again.created == 0 && again.unchanged == n,
        "the second run changed something"
    );
    let [members, balance, entries, lots] = store.program_totals(&import_program.id).await?;
    anyhow::ensure!(
        members as usize == n && balance == entries && entries == lots,
        "totals disagree"
    );
    Ok(ImportBench {
        backend,
        members: n,
        bare_members_per_sec: bare.round(),
        import_members_per_sec: import.round(),
        ratio: (import / bare * 1000.0).round() / 1000.0,
        rerun_rows_per_sec: rerun.round(),
    })
}

/// Runs on a temporary SQLite file and, with `postgres_admin_url`, on a PostgreSQL database
/// created for the run and dropped after it.
pub async fn import(
    postgres_admin_url: Option<&str>,
    members: usize,
) -> anyhow::Result<Vec<ImportBench>> {
    let dir =
        std::env::temp_dir().join(format!("tessera-bench-{}", crate::secret::random_token(6)));
    std::fs::create_dir_all(&dir)?;
    let sqlite = Store::connect(&format!("sqlite://{}", dir.join("bench.db").display())).await?;
    let mut rows = vec![on(sqlite.clone(), "sqlite", &dir, members).await?];
    sqlite.close().await;
    if let Some(admin_url) = postgres_admin_url {
        let (store, drop) = super::temp_postgres(admin_url).await?;
        let result = on(store.clone(), "postgres", &dir, members).await;
        store.close().await;
        drop.await?;
        rows.push(result?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}
