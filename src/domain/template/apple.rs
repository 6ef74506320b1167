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
            c.check(
                der.is_ok_and(|d| p256_public_key(&d)),
                "apple.nfc_encryption_public_key",
                || "apple.nfc_encryption_public_key must be a base64 P-256 public key (X.509 SubjectPublicKeyInfo)".into(),
            );
        }
    }
}

/// The DER of a P-256 SubjectPublicKeyInfo up to its point: SEQUENCE { SEQUENCE {
/// id-ecPublicKey, prime256v1 }, BIT STRING (no unused bits) }, for an uncompressed point (65
/// bytes, `04 x y`) and a compressed one (33 bytes, `02|03 x`). RFC 5480 §2.
const P256_SPKI_UNCOMPRESSED: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const P256_SPKI_COMPRESSED: &[u8] = &[
    0x30, 0x39, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x22, 0x00,
];

/// `der` is a P-256 public key as Apple's `encryptionPublicKey` takes it: exactly a
/// SubjectPublicKeyInfo of that curve (not another curve or algorithm of the same length),
/// whose point lies on the curve (OpenSSL decodes the point and refuses one that does not).
fn p256_public_key(der: &[u8]) -> bool {
    let point = match der.len() {
        91 => der.strip_prefix(P256_SPKI_UNCOMPRESSED),
        59 => der.strip_prefix(P256_SPKI_COMPRESSED),
        _ => None,
    };
    let Some(point) = point else {
        return false;
    };
    let on_curve = || -> Result<bool, openssl::error::ErrorStack> {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
        let mut ctx = openssl::bn::BigNumContext::new()?;
        Ok(openssl::ec::EcPoint::from_bytes(&group, point, &mut ctx).is_ok())
    };
    matches!(point[0], 0x02..=0x04) && on_curve().unwrap_or(false)
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

    #[test]
    fn an_nfc_key_is_a_p256_point_on_the_curve() {
        use openssl::ec::{EcGroup, EcKey, PointConversionForm};
        use openssl::nid::Nid;
        let der_of = |nid: Nid, compressed: bool| {
            let group = EcGroup::from_curve_name(nid).unwrap();
            let key = EcKey::generate(&group).unwrap();
            let mut ctx = openssl::bn::BigNumContext::new().unwrap();
            let (form, prefix) = if compressed {
                (PointConversionForm::COMPRESSED, P256_SPKI_COMPRESSED)
            } else {
                (PointConversionForm::UNCOMPRESSED, P256_SPKI_UNCOMPRESSED)
            };
            let point = key.public_key().to_bytes(&group, form, &mut ctx).unwrap();
            (
                key.public_key_to_der().unwrap(),
                [prefix, point.as_slice()].concat(),
            )
        };
        let (openssl_der, ours) = der_of(Nid::X9_62_PRIME256V1, false);
        assert_eq!(openssl_der, ours, "the prefix is OpenSSL's own encoding");
        assert!(p256_public_key(&ours));
        let (_, compressed) = der_of(Nid::X9_62_PRIME256V1, true);
        assert!(p256_public_key(&compressed));
        // What the old check let through: 91 bytes starting 0x30, a point off the curve, and
        // another curve's key.
        let mut junk = vec![0x30];
        junk.extend([0x5a; 90]);
        assert!(!p256_public_key(&junk));
        let mut off_curve = ours.clone();
        *off_curve.last_mut().unwrap() ^= 0x01;
        assert!(!p256_public_key(&off_curve));
        let (k1, _) = der_of(Nid::SECP256K1, false);
        assert!(!p256_public_key(&k1));
        let (p384, _) = der_of(Nid::SECP384R1, true);
        assert!(!p256_public_key(&p384));
        // Through the design's rules: a real key passes, the junk is named.
        let settings = |key: &[u8]| AppleSettings {
            nfc_encryption_public_key: Some(data_encoding::BASE64.encode(key)),
            ..AppleSettings::default()
        };
        assert_eq!(problems(&settings(&ours)), Vec::<String>::new());
        assert_eq!(problems(&settings(&junk)).len(), 1);
    }
}
