//! A bounded schemathesis run against the served OpenAPI document: every operation, a fixed
//! seed, 25 examples each; no 5xx and every response body as documented.
//!
//! Skips (printing `SKIPPED`) when `schemathesis` is not installed, unless
//! `TESSERA_REQUIRE_SCHEMATHESIS` is set, as `.ci/run` does after `pip install schemathesis`.

use crate::helpers::{TestApp, TestDb, issue_member};
use crate::on_both_backends;

fn installed() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "--version"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("TESSERA_REQUIRE_SCHEMATHESIS").is_some() {
        panic!("TESSERA_REQUIRE_SCHEMATHESIS is set but schemathesis is not installed");
    }
    if !found {
        eprintln!("SKIPPED: pip install schemathesis to run the API conformance check");
    }
    found
}

async fn schemathesis_finds_no_server_error_and_no_undocumented_body(db: TestDb) {
    if !installed() {
        return;
    }
    let app = TestApp::spawn_with(db, |c| {
        c.enrollment.lookups_per_minute = 100_000;
    })
    .await;
    // Something to find: a program with a template and a member, whose ids every operation
    // is given, so the run reaches the handlers' logic rather than 404s.
    let member = issue_member(&app, "coffee").await;
    let program_id = member["program_id"].as_str().unwrap();
    let template = app
        .state
        .store
        .latest_template(program_id)
        .await
        .unwrap()
        .unwrap();
    let config = app.data_dir.parent().unwrap().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\nprogram_id = {program_id:?}\nmember_id = {:?}\ntemplate_id = {:?}\n",
            member["id"].as_str().unwrap(),
            template.id
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new("python3")
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config)
        .args(["run", &app.url("/api/v1/openapi.json")])
        .args(["--url", &app.base])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "25", "--seed", "14", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", app.admin_key),
        ])
        .args(["--header", "Idempotency-Key: schemathesis"])
        .arg("--no-color")
        .current_dir(app.data_dir.parent().unwrap())
        .output()
        .await
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("passed") || l.contains("failed") || l.contains("error"))
        .collect();
    eprintln!("schemathesis: {}", summary.join(" | "));
    assert!(
        out.status.success(),
        "schemathesis failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

on_both_backends!(schemathesis_finds_no_server_error_and_no_undocumented_body);
