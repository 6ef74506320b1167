//! A local SMTP sink: Python's `aiosmtpd` writing every message it receives into a Maildir.
//!
//! `SmtpSink::start` returns `None` (and the test prints why and passes) only when `aiosmtpd` is
//! not installed and `TESSERA_REQUIRE_SMTP_SINK` is unset; `.ci/run` installs it and sets that.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct SmtpSink {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    pub async fn start() -> Option<SmtpSink> {
        let installed = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var_os("TESSERA_REQUIRE_SMTP_SINK").is_some() {
                panic!("TESSERA_REQUIRE_SMTP_SINK is set but python3 -m aiosmtpd is missing");
            }
            eprintln!("SKIPPED: the e-mail test needs an SMTP sink (pip install aiosmtpd)");
            return None;
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.path().join("maildir"))
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let sink = SmtpSink { port, dir, child };
        crate::helpers::eventually("the SMTP sink listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await;
        Some(sink)
    }

    /// Every message received so far, raw, with quoted-printable soft line breaks undone.
    pub fn messages(&self) -> Vec<String> {
        let new: PathBuf = self.dir.path().join("maildir").join("new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .map(|m| m.replace("=\r\n", "").replace("=\n", ""))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
