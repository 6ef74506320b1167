//! Settings: embedded defaults, then an optional TOML file, then `TESSERA_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The commented example printed by `tessera gen-config`.
pub const EXAMPLE: &str = include_str!("../config/example.toml");

/// Shortest `server.worker_lease_ms` accepted.
const MIN_WORKER_LEASE_MS: u64 = 1_000;

/// Environment variables with the `TESSERA_` prefix that are not configuration keys.
const NOT_CONFIG: &[&str] = &[
    "TEST_POSTGRES_URL",
    "REQUIRE_OPENAPI_VALIDATOR",
    "REQUIRE_BROWSER",
    "REQUIRE_SMTP_SINK",
    "REQUIRE_SCHEMATHESIS",
    "REQUIRE_NGINX",
    "CONFIG",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: String,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub log: String,
    pub apple: AppleConfig,
    pub ledger: LedgerConfig,
    pub retention: RetentionConfig,
    pub events: EventsConfig,
    pub push: PushConfig,
    pub google: GoogleConfig,
    pub enrollment: EnrollmentConfig,
    pub email: EmailConfig,
    pub server: ServerConfig,
    pub privacy: PrivacyConfig,
}

/// The key ring that seals members' e-mail and phone at rest (`crate::privacy`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// A file holding the key ring (mode 0600; refused when its group or others may read it).
    /// Unset (and `key` unset), the ring is made once in `<data_dir>/privacy-key`.
    pub key_file: Option<PathBuf>,
    /// The key ring itself, for `TESSERA_PRIVACY__KEY`: base64 keys, current first.
    pub key: Option<Secret>,
}

/// Limits that keep slow, idle or flooding clients from tying the server up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// From when a connection waits for a request (a new one, or the next on a kept-alive
    /// connection) until the whole request head has arrived; then the connection is closed.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight and no bytes either way for this long is closed.
    pub idle_timeout_ms: u64,
    /// From the request head until the whole body has arrived; then 408.
    pub body_read_timeout_ms: u64,
    /// From the request head until the response starts; then 408.
    pub request_timeout_ms: u64,
    /// Connections served at once; more wait in the listen queue. Lowered at start to fit the
    /// process's file-descriptor limit (raised to its hard limit first).
    pub max_connections: usize,
    /// `POST /passkit/v1/log` requests per client address per minute.
    pub device_logs_per_minute: u32,
    /// Wrong staff sign-ins per account and per client address before each further attempt
    /// waits, the wait doubling each time up to `sign_in_max_delay_seconds`.
    pub sign_in_free_attempts: u32,
    pub sign_in_max_delay_seconds: u64,
    /// How long a background worker's claim on its rows lasts (PostgreSQL, several
    /// instances): rows held by an instance that died are taken over once it runs out. Longer
    /// than the slowest batch (2,000 pushes, 50 Google calls).
    pub worker_lease_ms: u64,
    /// Reverse proxies (CIDRs) whose `Forwarded` / `X-Forwarded-For` headers name the client;
    /// from any other peer they are ignored. Empty: the connecting address is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The one header the trusted proxies set: `x-forwarded-for` (nginx, Caddy) or
    /// `forwarded` (RFC 7239). The other is ignored, since a proxy passes a client's own copy
    /// of it through untouched.
    pub forwarded_header: crate::proxy::ForwardedHeader,
    /// `GET /metrics` (Prometheus) answers only with `Authorization: Bearer <token>`; without a
    /// token the endpoint does not exist.
    pub metrics_token: Option<crate::secret::Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 5_000,
            body_read_timeout_ms: 30_000,
            request_timeout_ms: 60_000,
            max_connections: 4096,
            device_logs_per_minute: 12,
            sign_in_free_attempts: 5,
            sign_in_max_delay_seconds: 300,
            worker_lease_ms: 60_000,
            trusted_proxies: Vec::new(),
            forwarded_header: crate::proxy::ForwardedHeader::XForwardedFor,
            metrics_token: None,
        }
    }
}

/// How TLS is used towards the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test sink.
    None,
}

/// Outgoing e-mail (SMTP). Off unless `host` and `from` are set; without it a returning
/// customer is told to ask at the till for their card.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    pub host: Option<String>,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender, `Name <address>` or a bare address.
    pub from: Option<String>,
    /// Gives up on a connection or command after this long.
    pub timeout_seconds: u64,
    /// Card-link e-mails per member per hour (bursts of at most 3), so repeated joins with a
    /// member's e-mail or phone cannot fill their inbox.
    pub card_links_per_hour: u32,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            host: None,
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            from: None,
            timeout_seconds: 10,
            card_links_per_hour: 3,
        }
    }
}

/// Join pages, personal install links, and the throttles that keep both from being used to
/// enumerate members.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    /// Signs personal install links. Unset, a random secret is made once in
    /// `<data_dir>/link-secret`; several instances must share one, so set it for them.
    pub link_secret: Option<Secret>,
    /// How long a personal install link works.
    pub install_link_days: u32,
    /// Join-form submissions per client address per minute.
    pub joins_per_minute: u32,
    /// Barcode lookups (the scan page, `GET /api/v1/members?barcode=`) per staff account, API
    /// key or client address per minute.
    pub lookups_per_minute: u32,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        EnrollmentConfig {
            link_secret: None,
            install_link_days: 30,
            joins_per_minute: 30,
            lookups_per_minute: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoogleConfig {
    /// The numeric issuer id from the Google Pay & Wallet Console. Google Wallet is off unless
    /// this and `service_account_key` are set.
    pub issuer_id: Option<String>,
    /// The service account's JSON key file (its e-mail must be a user of the issuer).
    pub service_account_key: Option<PathBuf>,
    /// The OAuth2 token endpoint; the key file's `token_uri` unless set.
    pub token_uri: Option<String>,
    pub api_base: String,
    /// Save links are this plus the JWT.
    pub save_url_base: String,
    /// Domains allowed to show the "Add to Google Wallet" button from a save JWT.
    pub origins: Vec<String>,
    /// Where Google's root keys for callback signatures are published, and the sender id the
    /// callbacks are signed for (`GoogleWalletPasses` with `wallet.google.com` in newer docs).
    pub callback_keys_url: String,
    pub callback_sender_id: String,
    /// Wallet API requests per second at most (Google allows 20).
    pub requests_per_second: u32,
    /// First retry delay after a failed sync; doubles with each attempt, with jitter.
    pub retry_base_ms: u64,
    /// How often the sync worker looks for members to write.
    pub poll_interval_ms: u64,
}

impl Default for GoogleConfig {
    fn default() -> Self {
        GoogleConfig {
            issuer_id: None,
            service_account_key: None,
            token_uri: None,
            api_base: crate::google::client::API_BASE.into(),
            save_url_base: "https://pay.google.com/gp/v/save/".into(),
            origins: Vec::new(),
            callback_keys_url: crate::google::callback::KEYS_URL.into(),
            callback_sender_id: crate::google::callback::SENDER_ID.into(),
            requests_per_second: 20,
            retry_base_ms: 1000,
            poll_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Send APNs pushes. Unset: on when a real signing identity is configured, or when
    /// `apns_url` is set; development certificates cannot push to Apple.
    pub enabled: Option<bool>,
    /// APNs base URL; Apple's production host unless set (a local stand-in in tests).
    pub apns_url: Option<String>,
    /// An extra CA certificate (PEM) to trust for `apns_url`, for stand-ins.
    pub apns_root_certificate: Option<PathBuf>,
    /// Token auth: the `.p8` key file from Apple, its key id and the team it belongs to. Pass
    /// types of that team push with the token; others with their certificate.
    pub apns_key: Option<PathBuf>,
    pub apns_key_id: Option<String>,
    pub apns_team_id: Option<String>,
    /// First retry delay after a failed push; doubles with each attempt, with jitter.
    pub retry_base_ms: u64,
    /// How often the dispatcher looks at the outbox when nothing woke it.
    pub poll_interval_ms: u64,
    /// An ended card's registrations are dropped once its devices fetched the voided pass, or
    /// this many days after it ended, whichever comes first.
    pub ended_registration_days: u32,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: None,
            apns_url: None,
            apns_root_certificate: None,
            apns_key: None,
            apns_key_id: None,
            apns_team_id: None,
            retry_base_ms: 1000,
            poll_interval_ms: 1000,
            ended_registration_days: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// How long an Idempotency-Key is remembered; must cover the longest POS retry window.
    pub idempotency_retention_hours: u32,
    /// How often lapsed points are expired.
    pub expiry_interval_seconds: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            idempotency_retention_hours: 72,
            expiry_interval_seconds: 60,
        }
    }
}

/// What the retention job (`jobs::retention_once`) keeps. Each program's member retention is
/// the program's setting (`PUT /api/v1/programs/{id}/retention`), off by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Google callbacks, pass download times and push outcomes older than this are deleted.
    pub log_days: u32,
    /// How often the job looks for inactive members and old logs.
    pub interval_seconds: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            log_days: 90,
            interval_seconds: 3600,
        }
    }
}

/// The event feed and webhooks (`storage::events`, `webhooks`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events older than this are deleted by the retention job (feed, replays).
    pub retention_days: u32,
    /// How long a webhook delivery may take before it counts as failed.
    pub delivery_timeout_ms: u64,
    /// How long a delivery is retried (exponential backoff with jitter) before it is given up.
    pub retry_hours: u32,
    /// An endpoint whose deliveries failed for this long without a success is disabled.
    pub disable_after_hours: u32,
    /// How often the webhook worker looks for new events and due retries.
    pub poll_ms: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retention_days: 30,
            delivery_timeout_ms: 10_000,
            retry_hours: 72,
            disable_after_hours: 120,
            poll_ms: 500,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppleConfig {
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub pkcs12: Option<PathBuf>,
    pub pkcs12_password: Option<Secret>,
    pub wwdr_certificate: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://./data/tessera.db".into(),
            public_url: "http://127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            log: "info,tessera=info".into(),
            apple: AppleConfig::default(),
            ledger: LedgerConfig::default(),
            retention: RetentionConfig::default(),
            events: EventsConfig::default(),
            push: PushConfig::default(),
            google: GoogleConfig::default(),
            enrollment: EnrollmentConfig::default(),
            email: EmailConfig::default(),
            server: ServerConfig::default(),
            privacy: PrivacyConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

/// `TESSERA_*` variables kept as the strings they are, so a numeric Google issuer id or an
/// all-digit password reaches a string key intact; figment's own `Env` guesses a type for
/// each value, and `3388000000012345678` became a number that a string key refused. A value
/// written `[a, b]` is a list (`TESSERA_GOOGLE__ORIGINS`); numbers and bools are read from
/// the strings by the lossy extraction in [`Config::from_figment`].
struct EnvAsWritten(Env);

impl Provider for EnvAsWritten {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in self.0.iter() {
            let value = if raw.trim_start().starts_with('[') {
                raw.parse::<Value>().expect("infallible")
            } else {
                Value::from(raw)
            };
            insert_at(&mut dict, key.as_str(), value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Puts `value` at the dotted `path` (`google.issuer_id`), making sections as needed.
fn insert_at(dict: &mut Dict, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            dict.insert(path.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = dict
                .entry(section.to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_at(inner, rest, value);
            }
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (which must exist when given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(EnvAsWritten(
            Env::prefixed("TESSERA_").ignore(NOT_CONFIG).split("__"),
        ));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        // Lossy: a string (every environment value) is read as a number or bool where the key
        // wants one (`TESSERA_EMAIL__PORT=465`, `TESSERA_PUSH__ENABLED=true`).
        let config: Config = figment.extract_lossy().map_err(|e| {
            // figment's own message names the unknown or mistyped key and where it came from.
            ConfigError(e.to_string())
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let url = self.public_url.trim_end_matches('/');
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError(format!(
                "public_url must start with https:// or http://, got {:?}",
                self.public_url
            )));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres:")
            || self.database_url.starts_with("postgresql:"))
        {
            return Err(ConfigError(
                "database_url must start with sqlite: or postgres:".into(),
            ));
        }
        if self.server.worker_lease_ms < MIN_WORKER_LEASE_MS {
            return Err(ConfigError(format!(
                "server.worker_lease_ms must be at least {MIN_WORKER_LEASE_MS} (a claim shorter than one round of work would be taken over while it runs), got {}",
                self.server.worker_lease_ms
            )));
        }
        let a = &self.apple;
        if a.pkcs12.is_some() && (a.certificate.is_some() || a.private_key.is_some()) {
            return Err(ConfigError(
                "apple: set either pkcs12 or certificate + private_key, not both".into(),
            ));
        }
        if a.certificate.is_some() != a.private_key.is_some() {
            return Err(ConfigError(
                "apple: certificate and private_key must be set together".into(),
            ));
        }
        let p = &self.push;
        let token_parts = [
            p.apns_key.is_some(),
            p.apns_key_id.is_some(),
            p.apns_team_id.is_some(),
        ];
        if token_parts.iter().any(|x| *x) && !token_parts.iter().all(|x| *x) {
            return Err(ConfigError(
                "push: apns_key, apns_key_id and apns_team_id go together".into(),
            ));
        }
        let e = &self.email;
        if e.host.is_some() != e.from.is_some() {
            return Err(ConfigError("email: host and from go together".into()));
        }
        if e.username.is_some() != e.password.is_some() {
            return Err(ConfigError(
                "email: username and password go together".into(),
            ));
        }
        if (a.pkcs12.is_some() || a.certificate.is_some()) && a.wwdr_certificate.is_none() {
            return Err(ConfigError(
                "apple.wwdr_certificate is required with a signing identity (Apple's WWDR G4 intermediate)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The public base URL without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// The `webServiceURL` written into passes; devices append `/v1/...`.
    pub fn web_service_url(&self) -> String {
        format!("{}/passkit", self.public_base())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let parsed: Config = Figment::from(Toml::string(EXAMPLE)).extract().unwrap();
        let defaults = Config::default();
        assert_eq!(parsed.listen, defaults.listen);
        assert_eq!(parsed.database_url, defaults.database_url);
        assert_eq!(parsed.public_url, defaults.public_url);
    }

    #[test]
    fn environment_overrides_file_and_unknown_keys_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "t.toml",
                "listen = \"127.0.0.1:9000\"\npublic_url = \"https://a.example\"",
            )?;
            jail.set_env("TESSERA_PUBLIC_URL", "https://b.example/");
            jail.set_env("TESSERA_TEST_POSTGRES_URL", "postgres://ignored");
            let c = Config::load(Some(Path::new("t.toml"))).unwrap();
            assert_eq!(c.listen.port(), 9000);
            assert_eq!(c.public_base(), "https://b.example");
            assert_eq!(c.web_service_url(), "https://b.example/passkit");

            jail.create_file("bad.toml", "listen = \"127.0.0.1:9000\"\nlisten_port = 3")?;
            let err = Config::load(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen_port"), "{err}");

            jail.set_env("TESSERA_APPLE__CERT", "x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("cert"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn half_an_identity_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("TESSERA_APPLE__CERTIFICATE", "/x/pass.pem");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("private_key"), "{err}");
            Ok(())
        });
    }
}

/// Every key of each section set from the environment as the README and `config/example.toml`
/// document it, with values figment's type guessing would have turned into numbers or bools.
#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error
mod env_tests {
    use super::*;
    use figment::Jail;

    /// Checks that `vars` (`SECTION__KEY` without the prefix) name every key of `section`
    /// ("" for the top level).
    fn assert_covers(section: &str, vars: &[(&str, &str)]) {
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let table = if section.is_empty() {
            &defaults
        } else {
            &defaults[section]
        };
        let mut expected: Vec<String> = table
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, v)| !section.is_empty() || !v.is_object())
            .map(|(k, _)| k.clone())
            .collect();
        expected.sort();
        let prefix = if section.is_empty() {
            String::new()
        } else {
            format!("{}__", section.to_ascii_uppercase())
        };
        let mut covered: Vec<String> = vars
            .iter()
            .map(|(k, _)| {
                k.strip_prefix(&prefix)
                    .unwrap_or_else(|| panic!("{k} is not in [{section}]"))
                    .to_ascii_lowercase()
            })
            .collect();
        covered.sort();
        covered.dedup();
        assert_eq!(covered, expected, "the test sets every key of [{section}]");
    }

    fn load(jail: &mut Jail, vars: &[(&str, &str)]) -> Config {
        for (k, v) in vars {
            jail.set_env(format!("TESSERA_{k}"), v);
        }
        Config::load(None).unwrap_or_else(|e| panic!("{vars:?}: {e}"))
    }

    fn load_with(jail: &mut Jail, section: &str, vars: &[(&str, &str)]) -> Config {
        assert_covers(section, vars);
        load(jail, vars)
    }

    #[test]
    fn top_level_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "",
                &[
                    ("LISTEN", "0.0.0.0:9090"),
                    ("DATABASE_URL", "postgres://u@db/tessera"),
                    ("PUBLIC_URL", "https://cards.example"),
                    ("DATA_DIR", "/var/lib/tessera"),
                    ("LOG", "debug"),
                ],
            );
            assert_eq!(c.listen, "0.0.0.0:9090".parse().unwrap());
            assert_eq!(c.database_url, "postgres://u@db/tessera");
            assert_eq!(c.public_url, "https://cards.example");
            assert_eq!(c.data_dir, PathBuf::from("/var/lib/tessera"));
            assert_eq!(c.log, "debug");
            Ok(())
        });
    }

    #[test]
    fn google_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "google",
                &[
                    ("GOOGLE__ISSUER_ID", "3388000000012345678"),
                    ("GOOGLE__SERVICE_ACCOUNT_KEY", "/etc/tessera/sa.json"),
                    ("GOOGLE__TOKEN_URI", "https://oauth2.example/token"),
                    ("GOOGLE__API_BASE", "http://127.0.0.1:9/v1"),
                    ("GOOGLE__SAVE_URL_BASE", "https://pay.example/save/"),
                    ("GOOGLE__ORIGINS", "[https://a.example, https://b.example]"),
                    ("GOOGLE__CALLBACK_KEYS_URL", "https://keys.example"),
                    ("GOOGLE__CALLBACK_SENDER_ID", "12345"),
                    ("GOOGLE__REQUESTS_PER_SECOND", "5"),
                    ("GOOGLE__RETRY_BASE_MS", "250"),
                    ("GOOGLE__POLL_INTERVAL_MS", "100"),
                ],
            );
            let g = c.google;
            assert_eq!(g.issuer_id.as_deref(), Some("3388000000012345678"));
            assert_eq!(
                g.service_account_key,
                Some(PathBuf::from("/etc/tessera/sa.json"))
            );
            assert_eq!(g.token_uri.as_deref(), Some("https://oauth2.example/token"));
            assert_eq!(g.api_base, "http://127.0.0.1:9/v1");
            assert_eq!(g.save_url_base, "https://pay.example/save/");
            assert_eq!(g.origins, ["https://a.example", "https://b.example"]);
            assert_eq!(g.callback_keys_url, "https://keys.example");
            assert_eq!(g.callback_sender_id, "12345");
            assert_eq!(
                (g.requests_per_second, g.retry_base_ms, g.poll_interval_ms),
                (5, 250, 100)
            );
            Ok(())
        });
    }

    #[test]
    fn apple_keys_from_the_environment() {
        // Either a PKCS#12 file or a PEM pair, so two loads between them set every key.
        let pkcs12 = [
            ("APPLE__PKCS12", "/etc/tessera/pass.p12"),
            ("APPLE__PKCS12_PASSWORD", "123456"),
            ("APPLE__WWDR_CERTIFICATE", "/etc/tessera/wwdr.pem"),
        ];
        let pem = [
            ("APPLE__CERTIFICATE", "/etc/tessera/pass.pem"),
            ("APPLE__PRIVATE_KEY", "/etc/tessera/pass.key"),
            ("APPLE__WWDR_CERTIFICATE", "/etc/tessera/wwdr.pem"),
        ];
        assert_covers("apple", &[&pkcs12[..], &pem[..]].concat());
        Jail::expect_with(|jail| {
            let a = load(jail, &pkcs12).apple;
            assert_eq!(a.pkcs12, Some(PathBuf::from("/etc/tessera/pass.p12")));
            assert_eq!(
                a.pkcs12_password.as_ref().map(Secret::expose),
                Some("123456")
            );
            assert_eq!(
                a.wwdr_certificate,
                Some(PathBuf::from("/etc/tessera/wwdr.pem"))
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            let a = load(jail, &pem).apple;
            assert_eq!(a.certificate, Some(PathBuf::from("/etc/tessera/pass.pem")));
            assert_eq!(a.private_key, Some(PathBuf::from("/etc/tessera/pass.key")));
            Ok(())
        });
    }

    #[test]
    fn push_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "push",
                &[
                    ("PUSH__ENABLED", "true"),
                    ("PUSH__APNS_URL", "https://127.0.0.1:8443"),
                    ("PUSH__APNS_ROOT_CERTIFICATE", "/etc/tessera/ca.pem"),
                    ("PUSH__APNS_KEY", "/etc/tessera/AuthKey.p8"),
                    ("PUSH__APNS_KEY_ID", "1234567890"),
                    ("PUSH__APNS_TEAM_ID", "0012345678"),
                    ("PUSH__RETRY_BASE_MS", "500"),
                    ("PUSH__POLL_INTERVAL_MS", "200"),
                    ("PUSH__ENDED_REGISTRATION_DAYS", "7"),
                ],
            );
            let p = c.push;
            assert_eq!(p.enabled, Some(true));
            assert_eq!(p.apns_url.as_deref(), Some("https://127.0.0.1:8443"));
            assert_eq!(
                p.apns_root_certificate,
                Some(PathBuf::from("/etc/tessera/ca.pem"))
            );
            assert_eq!(p.apns_key, Some(PathBuf::from("/etc/tessera/AuthKey.p8")));
            assert_eq!(p.apns_key_id.as_deref(), Some("1234567890"));
            assert_eq!(p.apns_team_id.as_deref(), Some("0012345678"));
            assert_eq!((p.retry_base_ms, p.poll_interval_ms), (500, 200));
            assert_eq!(p.ended_registration_days, 7);
            Ok(())
        });
    }

    #[test]
    fn ledger_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "ledger",
                &[
                    ("LEDGER__IDEMPOTENCY_RETENTION_HOURS", "24"),
                    ("LEDGER__EXPIRY_INTERVAL_SECONDS", "5"),
                ],
            );
            assert_eq!(c.ledger.idempotency_retention_hours, 24);
            assert_eq!(c.ledger.expiry_interval_seconds, 5);
            Ok(())
        });
    }

    #[test]
    fn retention_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "retention",
                &[
                    ("RETENTION__LOG_DAYS", "30"),
                    ("RETENTION__INTERVAL_SECONDS", "600"),
                ],
            );
            assert_eq!(c.retention.log_days, 30);
            assert_eq!(c.retention.interval_seconds, 600);
            Ok(())
        });
    }

    #[test]
    fn events_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "events",
                &[
                    ("EVENTS__RETENTION_DAYS", "7"),
                    ("EVENTS__DELIVERY_TIMEOUT_MS", "2500"),
                    ("EVENTS__RETRY_HOURS", "24"),
                    ("EVENTS__DISABLE_AFTER_HOURS", "96"),
                    ("EVENTS__POLL_MS", "100"),
                ],
            );
            let e = c.events;
            assert_eq!(e.retention_days, 7);
            assert_eq!(e.delivery_timeout_ms, 2500);
            assert_eq!(e.retry_hours, 24);
            assert_eq!(e.disable_after_hours, 96);
            assert_eq!(e.poll_ms, 100);
            Ok(())
        });
    }

    #[test]
    fn enrollment_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "enrollment",
                &[
                    ("ENROLLMENT__LINK_SECRET", "98765432109876543210"),
                    ("ENROLLMENT__INSTALL_LINK_DAYS", "7"),
                    ("ENROLLMENT__JOINS_PER_MINUTE", "10"),
                    ("ENROLLMENT__LOOKUPS_PER_MINUTE", "20"),
                ],
            );
            let e = c.enrollment;
            assert_eq!(
                e.link_secret.as_ref().map(Secret::expose),
                Some("98765432109876543210")
            );
            assert_eq!(
                (
                    e.install_link_days,
                    e.joins_per_minute,
                    e.lookups_per_minute
                ),
                (7, 10, 20)
            );
            Ok(())
        });
    }

    #[test]
    fn privacy_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "privacy",
                &[
                    ("PRIVACY__KEY_FILE", "/etc/tessera/privacy-key"),
                    ("PRIVACY__KEY", "a2V5"),
                ],
            );
            let p = c.privacy;
            assert_eq!(
                p.key_file.as_deref(),
                Some(Path::new("/etc/tessera/privacy-key"))
            );
            assert_eq!(p.key.as_ref().map(Secret::expose), Some("a2V5"));
            Ok(())
        });
    }

    #[test]
    fn email_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "email",
                &[
                    ("EMAIL__HOST", "127.0.0.1"),
                    ("EMAIL__PORT", "465"),
                    ("EMAIL__TLS", "tls"),
                    ("EMAIL__USERNAME", "1001"),
                    ("EMAIL__PASSWORD", "true"),
                    ("EMAIL__FROM", "Example Coffee <cards@example.com>"),
                    ("EMAIL__TIMEOUT_SECONDS", "3"),
                    ("EMAIL__CARD_LINKS_PER_HOUR", "2"),
                ],
            );
            let e = c.email;
            assert_eq!(e.host.as_deref(), Some("127.0.0.1"));
            assert_eq!(e.port, 465);
            assert_eq!(e.tls, SmtpTls::Tls);
            assert_eq!(e.username.as_deref(), Some("1001"));
            assert_eq!(e.password.as_ref().map(Secret::expose), Some("true"));
            assert_eq!(
                e.from.as_deref(),
                Some("Example Coffee <cards@example.com>")
            );
            assert_eq!((e.timeout_seconds, e.card_links_per_hour), (3, 2));
            Ok(())
        });
    }

    #[test]
    fn server_keys_from_the_environment() {
        Jail::expect_with(|jail| {
            let c = load_with(
                jail,
                "server",
                &[
                    ("SERVER__HEADER_READ_TIMEOUT_MS", "1000"),
                    ("SERVER__IDLE_TIMEOUT_MS", "2000"),
                    ("SERVER__BODY_READ_TIMEOUT_MS", "3000"),
                    ("SERVER__REQUEST_TIMEOUT_MS", "4000"),
                    ("SERVER__MAX_CONNECTIONS", "64"),
                    ("SERVER__DEVICE_LOGS_PER_MINUTE", "6"),
                    ("SERVER__SIGN_IN_FREE_ATTEMPTS", "3"),
                    ("SERVER__SIGN_IN_MAX_DELAY_SECONDS", "60"),
                    ("SERVER__WORKER_LEASE_MS", "1500"),
                    ("SERVER__TRUSTED_PROXIES", "[10.0.0.0/8, 192.168.1.7/32]"),
                    ("SERVER__METRICS_TOKEN", "123456"),
                    ("SERVER__FORWARDED_HEADER", "forwarded"),
                ],
            );
            let s = c.server;
            assert_eq!(
                (
                    s.header_read_timeout_ms,
                    s.idle_timeout_ms,
                    s.body_read_timeout_ms,
                    s.request_timeout_ms
                ),
                (1000, 2000, 3000, 4000)
            );
            assert_eq!(s.max_connections, 64);
            assert_eq!(s.device_logs_per_minute, 6);
            assert_eq!(
                (s.sign_in_free_attempts, s.sign_in_max_delay_seconds),
                (3, 60)
            );
            assert_eq!(s.worker_lease_ms, 1500);
            assert_eq!(s.forwarded_header, crate::proxy::ForwardedHeader::Forwarded);
            assert_eq!(
                s.trusted_proxies,
                [
                    "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
                    "192.168.1.7/32".parse().unwrap()
                ]
            );
            assert_eq!(s.metrics_token.as_ref().map(|t| t.expose()), Some("123456"));
            Ok(())
        });
    }
}
