//! Settings: embedded defaults, then an optional TOML file, then `TESSERA_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The commented example printed by `tessera gen-config`.
pub const EXAMPLE: &str = include_str!("../config/example.toml");

/// Environment variables with the `TESSERA_` prefix that are not configuration keys.
const NOT_CONFIG: &[&str] = &[
    "TEST_POSTGRES_URL",
    "REQUIRE_OPENAPI_VALIDATOR",
    "REQUIRE_BROWSER",
    "REQUIRE_SMTP_SINK",
    "REQUIRE_SCHEMATHESIS",
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
    pub push: PushConfig,
    pub google: GoogleConfig,
    pub enrollment: EnrollmentConfig,
    pub email: EmailConfig,
    pub server: ServerConfig,
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
            push: PushConfig::default(),
            google: GoogleConfig::default(),
            enrollment: EnrollmentConfig::default(),
            email: EmailConfig::default(),
            server: ServerConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

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
        figment = figment.merge(Env::prefixed("TESSERA_").ignore(NOT_CONFIG).split("__"));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
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
