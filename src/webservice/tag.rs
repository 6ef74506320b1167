//! The `lastUpdated` tag of `GET /v1/devices/…/registrations/…`. Apple treats it as opaque: the
//! device sends back whatever it was given as `passesUpdatedSince`.
//!
//! A time tag ("changed after T") is only exact if changes commit in the order of their times,
//! which concurrent writers do not promise: a change stamped earlier can commit after a device
//! was told T, and would never be listed. So the tag records the version of every pass the
//! device is registered for, and a request lists exactly the serials whose version differs from
//! the tag's, whatever order their changes committed in. A device asking with the newest tag
//! gets 204.
//!
//! Format: `v1.` and base64url of 14 bytes per pass (6 bytes of SHA-256 of the serial, then the
//! version as a big-endian i64), by serial. A device registered for more than `MAX_EXACT`
//! passes of one type gets a time tag (the newest version as decimal), compared by time.

use std::collections::HashMap;

use data_encoding::BASE64URL_NOPAD;
use sha2::{Digest, Sha256};

/// Passes one exact tag describes (about 19 characters each in the query string).
const MAX_EXACT: usize = 256;

/// How far a time tag is held behind the newest version it covers.
const TIME_TAG_MARGIN_MS: i64 = 30_000;

const KEY: usize = 6;
const ENTRY: usize = KEY + 8;

/// What a device's `passesUpdatedSince` says it holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// Nothing: the device's first request, or a tag we cannot read.
    Nothing,
    /// The version of each pass, by serial key.
    Versions(HashMap<[u8; KEY], i64>),
    /// Everything changed up to this time (older tags, and devices with very many passes).
    Time(i64),
}

fn key(serial: &str) -> [u8; KEY] {
    let digest = Sha256::digest(serial.as_bytes());
    let mut k = [0; KEY];
    k.copy_from_slice(&digest[..KEY]);
    k
}

pub fn parse(tag: Option<&str>) -> Since {
    let Some(tag) = tag.map(str::trim) else {
        return Since::Nothing;
    };
    if let Some(body) = tag.strip_prefix("v1.") {
        let Ok(bytes) = BASE64URL_NOPAD.decode(body.as_bytes()) else {
            return Since::Nothing;
        };
        if bytes.len() % ENTRY != 0 {
            return Since::Nothing;
        }
        let versions = bytes
            .chunks(ENTRY)
            .map(|e| {
                let mut k = [0; KEY];
                k.copy_from_slice(&e[..KEY]);
                let v = i64::from_be_bytes(e[KEY..].try_into().expect("8 bytes"));
                (k, v)
            })
            .collect();
        return Since::Versions(versions);
    }
    tag.parse().map_or(Since::Nothing, Since::Time)
}

/// The serials (of `passes`: every registered pass with its version) the device must fetch.
pub fn changed<'a>(since: &Since, passes: &'a [(String, i64)]) -> Vec<&'a str> {
    passes
        .iter()
        .filter(|(serial, version)| match since {
            Since::Nothing => true,
            Since::Versions(held) => held.get(&key(serial)) != Some(version),
            Since::Time(t) => version > t,
        })
        .map(|(serial, _)| serial.as_str())
        .collect()
}

/// The tag for a device that now holds `passes` (sorted by serial), at `now`.
pub fn tag(passes: &[(String, i64)], now: i64) -> String {
    if passes.len() > MAX_EXACT {
        // A time tag is only exact for changes that committed in order: held behind the
        // newest version, so a change stamped a little earlier that commits late is listed.
        // Never after now: a burst of changes puts a pass's version seconds ahead of the clock
        // (each change moves it a whole second), and a later change to another pass, stamped
        // now, must still be listed. That pass is listed again until the clock passes it.
        let newest = passes.iter().map(|(_, v)| *v).max().unwrap_or_default();
        return (newest.min(now) - TIME_TAG_MARGIN_MS).to_string();
    }
    let mut bytes = Vec::with_capacity(passes.len() * ENTRY);
    for (serial, version) in passes {
        bytes.extend_from_slice(&key(serial));
        bytes.extend_from_slice(&version.to_be_bytes());
    }
    format!("v1.{}", BASE64URL_NOPAD.encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(v: &[(&str, i64)]) -> Vec<(String, i64)> {
        v.iter().map(|(s, v)| (s.to_string(), *v)).collect()
    }

    #[test]
    fn a_late_commit_of_an_older_time_is_still_listed() {
        // The device was told about A at 1000 and B at 5000; then a change to A stamped 3000
        // commits late. A time tag (5000) would never list it.
        let told = passes(&[("A", 1000), ("B", 5000)]);
        let since = parse(Some(&tag(&told, 0)));
        assert!(changed(&since, &told).is_empty(), "same versions: nothing");
        let now = passes(&[("A", 3000), ("B", 5000)]);
        assert_eq!(changed(&since, &now), ["A"]);
        assert_eq!(changed(&Since::Time(5000), &now), Vec::<&str>::new());
    }

    #[test]
    fn new_registrations_unreadable_and_old_tags() {
        let told = passes(&[("A", 1000)]);
        let since = parse(Some(&tag(&told, 0)));
        let now = passes(&[("A", 1000), ("C", 10)]);
        assert_eq!(changed(&since, &now), ["C"]);
        assert_eq!(parse(Some("v1.!!")), Since::Nothing);
        assert_eq!(parse(Some("v1.AAAA")), Since::Nothing);
        assert_eq!(parse(Some("junk")), Since::Nothing);
        assert_eq!(parse(None), Since::Nothing);
        assert_eq!(parse(Some("1700000000000")), Since::Time(1_700_000_000_000));
        assert_eq!(changed(&Since::Nothing, &now), ["A", "C"]);
    }

    #[test]
    fn very_many_passes_fall_back_to_time() {
        let many: Vec<(String, i64)> = (0..=MAX_EXACT as i64)
            .map(|i| (format!("s{i:04}"), i))
            .collect();
        let now = 1_000_000;
        assert_eq!(
            tag(&many, now),
            (MAX_EXACT as i64 - TIME_TAG_MARGIN_MS).to_string()
        );
        // One pass 90 s ahead of the clock after a burst: the tag stays behind now, so a change
        // to another pass stamped now is listed, and the pass ahead is listed again.
        let mut ahead = many.clone();
        ahead[0].1 = now + 90_000;
        let since = parse(Some(&tag(&ahead, now)));
        ahead[1].1 = now;
        assert_eq!(changed(&since, &ahead), ["s0000", "s0001"]);
        assert_eq!(tag(&many[..1], 0).len(), 3 + 19);
    }
}
