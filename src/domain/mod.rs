//! The loyalty domain: programs, card templates, members and their passes.
//!
//! Invariant: nothing here knows HTTP, SQL or a wallet's wire format; the rules here are plain
//! functions over plain values so they can be unit- and property-tested.

pub mod barcode;
pub mod color;
pub mod enrollment;
pub mod google_notify;
pub mod template;

use std::fmt;

pub use template::{BarcodeFormat, FieldSpec, TemplateDesign};

use crate::ledger::LoyaltyRules;

/// One thing wrong with an input, named by the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// An input that breaks one or more rules; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.problems.iter().map(|p| p.message.clone()).collect();
        f.write_str(&parts.join("; "))
    }
}

impl Invalid {
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            problems: vec![Problem {
                field: field.into(),
                message: message.into(),
            }],
        }
    }
}

/// Collects problems while checking an input, so a caller sees all of them at once.
#[derive(Default)]
pub struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    pub fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
    pub fn check(&mut self, ok: bool, field: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(field, message());
        }
    }
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
    pub fn finish(self) -> Result<(), Invalid> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Invalid {
                problems: self.problems,
            })
        }
    }
}

/// A loyalty program: one brand's card, issued under one Apple Pass Type ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub pass_type_identifier: String,
    pub team_identifier: String,
    pub organization_name: String,
    pub rules: LoyaltyRules,
    pub created_at: i64,
}

/// A new program as asked for, before it has an id.
#[derive(Debug, Clone)]
pub struct NewProgram {
    pub slug: String,
    pub name: String,
    pub pass_type_identifier: String,
    pub team_identifier: String,
    pub organization_name: String,
    pub rules: LoyaltyRules,
}

impl NewProgram {
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut c = Checker::default();
        c.check(is_slug(&self.slug), "slug", || {
            format!(
                "slug must be 1 to 64 lowercase letters, digits or '-', got {:?}",
                self.slug
            )
        });
        check_text(&mut c, "name", &self.name, 200);
        check_text(&mut c, "organization_name", &self.organization_name, 200);
        c.check(
            is_pass_type_identifier(&self.pass_type_identifier),
            "pass_type_identifier",
            || {
                format!(
                    "pass_type_identifier must look like pass.com.example.loyalty, got {:?}",
                    self.pass_type_identifier
                )
            },
        );
        c.check(
            is_team_identifier(&self.team_identifier),
            "team_identifier",
            || {
                format!(
                    "team_identifier must be Apple's 10-character Team ID (A-Z, 0-9), got {:?}",
                    self.team_identifier
                )
            },
        );
        if let Err(e) = self.rules.validate() {
            c.problems.extend(e.problems);
        }
        c.finish()
    }
}

/// A card template as stored: a versioned design; every change bumps `version`.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: String,
    pub program_id: String,
    pub name: String,
    pub version: i64,
    pub design: TemplateDesign,
    pub updated_at: i64,
}

/// Where a member's card stands, for both wallets: Apple's `voided` and Google's
/// `LoyaltyObject.state`. Cards are active until the card lifecycle ends or expires them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CardState {
    #[default]
    Active,
    /// Ended by the program: Apple shows the pass as void, Google moves it to "Expired passes".
    Inactive,
    /// Past its validity: Apple's `expirationDate` has passed; Google's `EXPIRED`.
    Expired,
}

impl CardState {
    /// Google's `LoyaltyObject.state`.
    pub fn google(self) -> &'static str {
        match self {
            CardState::Active => "ACTIVE",
            CardState::Inactive => "INACTIVE",
            CardState::Expired => "EXPIRED",
        }
    }
}

/// A holder of a program's card.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Member {
    pub id: String,
    pub program_id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    /// The value in the card's barcode: 128 random bits, so it cannot be guessed from another card.
    pub barcode: String,
    pub points: i64,
    pub tier: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewMember {
    pub display_name: String,
    pub external_id: Option<String>,
}

impl NewMember {
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut c = Checker::default();
        check_text(&mut c, "display_name", &self.display_name, 200);
        if let Some(ext) = &self.external_id {
            check_text(&mut c, "external_id", ext, 200);
        }
        c.finish()
    }
}

/// A member's Apple Wallet pass.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Pass {
    /// 128 random bits; appears in URLs.
    pub serial_number: String,
    pub member_id: String,
    pub template_id: String,
    pub pass_type_identifier: String,
    /// At least 32 characters; shared only with the device holding the pass.
    pub authentication_token: String,
    pub created_at: i64,
    /// Milliseconds since the epoch of the last change to anything the pass shows.
    pub updated_at: i64,
    /// When Wallet last downloaded the pass through the PassKit web service.
    pub last_fetched_at: Option<i64>,
    /// The public download link's own secret (256 bits), not the PassKit token: both rotate
    /// when the card is reissued.
    pub download_token: String,
    /// When the card was ended (voided); the member's other passes are older, ended ones.
    pub ended_at: Option<i64>,
}

impl Pass {
    /// What both wallets show: an ended card is void (Apple) and inactive (Google).
    pub fn state(&self) -> CardState {
        if self.ended_at.is_some() {
            CardState::Inactive
        } else {
            CardState::Active
        }
    }
}

/// Longest template name, in characters (the designer cuts names to it too).
pub const MAX_TEMPLATE_NAME: usize = 200;

/// `12480` as Wallet shows a decimal number in English, and as limits are named in errors:
/// `12,480`.
pub fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

pub fn check_text(c: &mut Checker, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        c.fail(field, format!("{field} must not be empty"));
    } else if value.chars().count() > max {
        c.fail(field, format!("{field} must be at most {max} characters"));
    }
}

pub fn is_slug(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// `pass.` followed by a reverse-DNS name, as Apple issues them.
pub fn is_pass_type_identifier(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("pass.") else {
        return false;
    };
    s.len() <= 255
        && !rest.is_empty()
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

pub fn is_team_identifier(s: &str) -> bool {
    s.len() == 10
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// An instant as people write one for a period: milliseconds since the epoch, RFC 3339
/// (`2026-12-03T10:00:00Z`), or a span back from `now_ms` (`90m`, `24h`, `7d`).
pub fn parse_instant(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    let span = |unit: i64| {
        t[..t.len() - 1]
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=100_000).contains(n))
            .map(|n| now_ms - n * unit)
    };
    let back = match t.chars().last() {
        Some('m') => span(60_000),
        Some('h') => span(3_600_000),
        Some('d') => span(86_400_000),
        _ => None,
    };
    if let Some(ms) = back {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .map(|d| (d.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            format!(
                "{t:?} is not a time: give milliseconds since the epoch, RFC 3339 \
                 (2026-12-03T10:00:00Z) or a span back from now (90m, 24h, 7d)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_in_three_forms() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_instant("1700000000000", now), Ok(1_700_000_000_000));
        assert_eq!(parse_instant("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_instant("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_instant("90m", now), Ok(now - 90 * 60_000));
        assert_eq!(
            parse_instant("2026-12-03T10:00:00Z", now),
            Ok(1_796_292_000_000)
        );
        assert!(parse_instant("yesterday", now).is_err());
        assert!(parse_instant("h", now).is_err());
    }

    #[test]
    fn identifiers() {
        assert!(is_pass_type_identifier("pass.com.example.loyalty"));
        assert!(!is_pass_type_identifier("com.example.loyalty"));
        assert!(!is_pass_type_identifier("pass."));
        assert!(!is_pass_type_identifier("pass.com..x"));
        assert!(is_team_identifier("ABCDE12345"));
        assert!(!is_team_identifier("abcde12345"));
        assert!(!is_team_identifier("ABCDE1234"));
        assert!(is_slug("example-coffee"));
        assert!(!is_slug("Example"));
        assert!(!is_slug(""));
    }

    #[test]
    fn new_program_reports_every_problem() {
        let p = NewProgram {
            slug: "ok".into(),
            name: " ".into(),
            pass_type_identifier: "com.x".into(),
            team_identifier: "short".into(),
            organization_name: "Org".into(),
            rules: LoyaltyRules::default(),
        };
        let err = p.validate().unwrap_err();
        let fields: Vec<_> = err.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["name", "pass_type_identifier", "team_identifier"]);
    }
}
