//! Apple-only settings of a store card (`apple-wallet.md` §4.1; Apple's "Pass" reference and
//! "Creating a store card pass"): whether the pass may be shared, the app it links to, when it
//! is relevant, how long a card stays valid, and NFC.

use serde::{Deserialize, Serialize};

use crate::domain::Checker;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppleSettings {
    /// `sharingProhibited`: Wallet offers no Share button (iOS 11 and later).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sharing_prohibited: bool,
    /// `associatedStoreIdentifiers`: App Store ids of the app the pass opens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub associated_store_identifiers: Vec<u64>,
    /// `appLaunchURL`: handed to that app; needs `associated_store_identifiers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_launch_url: Option<String>,
    /// `relevantDates` (iOS 18 and later): intervals when Wallet shows the card first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relevant_dates: Vec<RelevantInterval>,
    /// Days a card stays valid after it was issued: its `expirationDate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_days: Option<u32>,
    /// NFC: the terminal's ECDH P-256 public key (base64 X.509 SubjectPublicKeyInfo), for
    /// `nfc.encryptionPublicKey`; the card's barcode value is the NFC message. Needs a pass type
    /// certificate Apple enabled for NFC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfc_encryption_public_key: Option<String>,
}

/// A W3C date-time interval (with hours and minutes, and an offset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelevantInterval {
    pub start: String,
    pub end: String,
}

/// At most this many relevance intervals per design.
pub const MAX_RELEVANT_DATES: usize = 10;
/// Apple's limit for the NFC message, in bytes.
pub const MAX_NFC_MESSAGE: usize = 64;

impl AppleSettings {
    pub fn is_empty(&self) -> bool {
        *self == AppleSettings::default()
    }

    pub(super) fn check(&self, c: &mut Checker) {
        if let Some(url) = &self.app_launch_url {
            c.check(launch_url_ok(url), "apple.app_launch_url", || {
                format!(
                    "apple.app_launch_url must be a URL the app opens (a scheme of letters, digits, + - or ., not javascript, data or file; at most {MAX_LAUNCH_URL} characters, no spaces), got {url:?}"
                )
            });
            c.check(
                !self.associated_store_identifiers.is_empty(),
                "apple.app_launch_url",
                || "apple.app_launch_url needs apple.associated_store_identifiers (the app it opens)".into(),
            );
        }
        c.check(
            self.relevant_dates.len() <= MAX_RELEVANT_DATES,
            "apple.relevant_dates",
            || format!("at most {MAX_RELEVANT_DATES} relevant dates"),
        );
        for (i, d) in self.relevant_dates.iter().enumerate() {
            match (parse_instant(&d.start), parse_instant(&d.end)) {
                (Some(s), Some(e)) => c.check(s < e, "apple.relevant_dates", || {
                    format!("relevant date {}: the start must come before the end", i + 1)
                }),
                _ => c.fail(
                    "apple.relevant_dates",
                    format!(
                        "relevant date {}: start and end must be dates with a time, like 2026-12-24T08:00:00+01:00",
                        i + 1
                    ),
                ),
            }
        }
        if let Some(days) = self.validity_days {
            c.check((1..=36_500).contains(&days), "apple.validity_days", || {
                "apple.validity_days must be 1 to 36500".into()
            });
        }
        if let Some(key) = &self.nfc_encryption_public_key {
            let der = data_encoding::BASE64.decode(key.trim().as_bytes());
            // A P-256 SubjectPublicKeyInfo is 91 bytes (uncompressed point) or 59 (compressed).
            c.check(
                der.is_ok_and(|d| matches!(d.len(), 59 | 91) && d[0] == 0x30),
                "apple.nfc_encryption_public_key",
                || "apple.nfc_encryption_public_key must be a base64 P-256 public key (X.509 SubjectPublicKeyInfo)".into(),
            );
        }
    }
}

/// Longest `appLaunchURL` accepted.
pub const MAX_LAUNCH_URL: usize = 2048;

/// `scheme://rest` with an RFC 3986 scheme that is not one a browser would run or read
/// locally, within `MAX_LAUNCH_URL`, without whitespace or control characters.
fn launch_url_ok(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let refused = ["javascript", "data", "file", "vbscript"]
        .iter()
        .any(|r| scheme.eq_ignore_ascii_case(r));
    scheme_ok
        && !refused
        && !rest.is_empty()
        && url.chars().count() <= MAX_LAUNCH_URL
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A W3C date-time with hours and minutes and an offset (`Z` or `±hh:mm`), as Apple requires.
pub fn parse_instant(s: &str) -> Option<time::OffsetDateTime> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s, &Rfc3339).ok().or_else(|| {
        // Seconds are optional for Apple: 2026-12-24T08:00+01:00.
        let cut = if s.ends_with('Z') {
            s.len() - 1
        } else {
            s.len().checked_sub(6)?
        };
        let (date_time, offset) = (s.get(..cut)?, s.get(cut..)?);
        time::OffsetDateTime::parse(&format!("{date_time}:00{offset}"), &Rfc3339).ok()
    })
}

#[cfg(test)]
mod launch_url_tests {
    #[test]
    fn app_launch_urls_are_schemes_an_app_opens() {
        for good in [
            "coffee://card/open",
            "https://coffee.example/app",
            "my-app+x.v2://a",
        ] {
            assert!(super::launch_url_ok(good), "{good}");
        }
        for bad in [
            "javascript://%0Aalert(1)",
            "JavaScript://x",
            "data://text/html,x",
            "file:///etc/passwd",
            "coffee://",
            "://x",
            "1app://x",
            "coffee://a b",
            "coffee://a\u{7}",
        ] {
            assert!(!super::launch_url_ok(bad), "{bad}");
        }
        assert!(!super::launch_url_ok(&format!(
            "coffee://{}",
            "a".repeat(2048)
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(s: &AppleSettings) -> Vec<String> {
        let mut c = Checker::default();
        s.check(&mut c);
        c.finish()
            .err()
            .map(|i| i.problems.into_iter().map(|p| p.message).collect())
            .unwrap_or_default()
    }

    #[test]
    fn apples_rules_for_the_store_card_keys() {
        let ok = AppleSettings {
            sharing_prohibited: true,
            associated_store_identifiers: vec![123456789],
            app_launch_url: Some("coffee://card".into()),
            relevant_dates: vec![RelevantInterval {
                start: "2026-12-24T08:00:00+01:00".into(),
                end: "2026-12-24T18:00+01:00".into(),
            }],
            validity_days: Some(365),
            nfc_encryption_public_key: None,
        };
        assert_eq!(problems(&ok), Vec::<String>::new());
        let bad = AppleSettings {
            associated_store_identifiers: vec![],
            relevant_dates: vec![RelevantInterval {
                start: "2026-12-24".into(),
                end: "2026-12-23T08:00:00Z".into(),
            }],
            validity_days: Some(0),
            nfc_encryption_public_key: Some("bm90IGEga2V5".into()),
            ..ok.clone()
        };
        let p = problems(&bad);
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[0].contains("needs apple.associated_store_identifiers"));
        assert!(AppleSettings::default().is_empty());
    }
}
