//! The `tessera` binary as a user runs it.

use std::process::Command;

pub fn tessera(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.current_dir(dir).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TESSERA_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn demo_prints_the_card_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        let out = tessera(dir.path()).arg("demo").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = run();
    for key in [
        "member_id",
        "serial",
        "auth_token",
        "pass_type_identifier",
        "pass_url",
        "join_url",
        "scan_url",
    ] {
        assert!(
            first[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key} in {first}"
        );
    }
    assert!(first["auth_token"].as_str().unwrap().len() >= 32);
    assert!(
        first["pass_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:8080/passes/")
    );
    assert_eq!(first["join_url"], "http://127.0.0.1:8080/join/demo");
    assert_eq!(first["scan_url"], "http://127.0.0.1:8080/scan");
    assert_eq!(run(), first);
    assert!(
        dir.path().join("data/tessera.db").exists(),
        "default SQLite database"
    );
    assert!(
        dir.path().join("data/dev-certs/root-ca.pem").exists(),
        "dev identity in the data dir"
    );
}

#[test]
fn import_reads_csv_reports_bad_lines_writes_links_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        tessera(dir.path())
            .arg("demo")
            .output()
            .unwrap()
            .status
            .success()
    );
    let csv = dir.path().join("members.csv");
    std::fs::write(
        &csv,
        "external_id,name,email,points\nplastic-1,Ada,ada@example.com,120\nplastic-2,,,5\nplastic-3,Grace,,0\n",
    )
    .unwrap();
    let links = dir.path().join("links.csv");
    let run = || {
        let out = tessera(dir.path())
            .args([
                "import",
                csv.to_str().unwrap(),
                "--program",
                "demo",
                "--links",
            ])
            .arg(&links)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (
            serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
            stderr,
        )
    };
    let (report, stderr) = run();
    assert_eq!(
        (report["created"].as_i64(), report["unchanged"].as_i64()),
        (Some(2), Some(0))
    );
    assert_eq!(report["errors"][0]["line"], 3);
    assert!(
        stderr.contains("line 3: name must have 1 to 200 characters"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&links).unwrap();
    let rows: Vec<&str> = written.lines().collect();
    assert_eq!(rows[0], "external_id,member_id,install_url,expires_at");
    assert_eq!(rows.len(), 3);
    assert!(rows[1].starts_with("plastic-1,") && rows[1].contains("http://127.0.0.1:8080/card/"));
    let (again, _) = run();
    assert_eq!(
        (again["created"].as_i64(), again["unchanged"].as_i64()),
        (Some(0), Some(2))
    );
    let out = tessera(dir.path())
        .args(["import", csv.to_str().unwrap(), "--program", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no program with slug \"nope\""));
}

#[test]
fn config_errors_name_the_key_and_gen_config_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path()).arg("gen-config").output().unwrap();
    assert!(out.status.success());
    std::fs::write(dir.path().join("t.toml"), &out.stdout).unwrap();
    let ok = tessera(dir.path())
        .args(["--config", "t.toml", "migrate"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = tessera(dir.path())
        .arg("migrate")
        .env("TESSERA_LISTN", "127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("listn"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn dev_certs_writes_a_usable_identity() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(dir.path())
        .args([
            "dev-certs",
            "--out",
            "c",
            "--pass-type-id",
            "pass.com.x.y",
            "--team-id",
            "ABCDE12345",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = String::from_utf8(out.stdout).unwrap();
    assert!(config.contains("certificate = \"c/pass.pem\""), "{config}");
    let subject = Command::new("openssl")
        .args(["x509", "-in", "c/pass.pem", "-noout", "-subject"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&subject.stdout);
    assert!(
        subject.contains("UID = pass.com.x.y") && subject.contains("OU = ABCDE12345"),
        "{subject}"
    );
    let verify = Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            "c/root-ca.pem",
            "-untrusted",
            "c/wwdr-dev.pem",
            "c/pass.pem",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// SQLite is one server per file: a second `tessera serve`, or a `migrate` racing a server,
/// exits at once naming the file and the server's pid.
#[test]
fn a_second_server_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = tessera(dir.path())
        .arg("serve")
        .env("TESSERA_LISTEN", "127.0.0.1:0")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.path().join("data/tessera.db.lock");
    let holder = format!("serve {}", first.id());
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&lock).unwrap_or_default() != holder {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the first server never took the lock"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first server exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for command in ["serve", "migrate"] {
        let out = tessera(dir.path())
            .arg(command)
            .env("TESSERA_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("data/tessera.db is in use by another tessera server")
                && stderr.contains(&format!("(pid {})", first.id())),
            "{command}: {stderr}"
        );
    }
    // A one-off command still works beside the server.
    let out = tessera(dir.path())
        .args(["api-key", "create", "--name", "ops", "--role", "admin"])
        .output()
        .unwrap();
    let ok = out.status.success();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(ok, "{}", String::from_utf8_lossy(&out.stderr));
}
