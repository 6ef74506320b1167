//! The `.pkpass` bundle: `manifest.json` (SHA-1 of every file), the detached signature, and a
//! flat zip (`shared/spec/apple-wallet.md` §1.2, §1.5).
//!
//! Cost model: the RSA signature is the irreducible cost of a pass. Template images are
//! hashed once per template version ([`PreparedAssets`]) and, being PNG already, stored in the
//! zip without deflate, so a pass costs one signature plus a few kilobytes of copying.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};

use sha1::{Digest, Sha1};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::signer::{SignError, SigningIdentity};

pub const CONTENT_TYPE: &str = "application/vnd.apple.pkpass";

/// One template version's image files with their SHA-1s, computed once.
#[derive(Debug)]
pub struct PreparedAssets {
    pub version: i64,
    files: Vec<Asset>,
}

#[derive(Debug)]
struct Asset {
    name: String,
    bytes: Vec<u8>,
    sha1: String,
}

impl PreparedAssets {
    pub fn new(version: i64, files: Vec<(String, Vec<u8>)>) -> PreparedAssets {
        let files = files
            .into_iter()
            // Never ship hidden files: Wallet rejects a bundle with files the manifest lacks.
            // Google's images (`google/…`) are served to Google, never bundled.
            .filter(|(name, _)| {
                !name.starts_with('.') && !name.contains("/.") && !name.starts_with("google/")
            })
            .map(|(name, bytes)| {
                let sha1 = sha1_hex(&bytes);
                Asset { name, bytes, sha1 }
            })
            .collect();
        PreparedAssets { version, files }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.files.iter().any(|a| a.name == name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error("writing the pass archive: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("writing the pass archive: {0}")]
    Io(#[from] std::io::Error),
}

pub fn sha1_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha1::digest(bytes))
}

/// The compact `manifest.json`: every file but the manifest and signature, keys sorted.
pub fn manifest(pass_json: &[u8], assets: &PreparedAssets) -> Vec<u8> {
    let pass_sha1 = sha1_hex(pass_json);
    let mut entries: BTreeMap<&str, &str> = BTreeMap::new();
    entries.insert("pass.json", &pass_sha1);
    for a in &assets.files {
        entries.insert(&a.name, &a.sha1);
    }
    serde_json::to_vec(&entries).expect("manifest serialises")
}

/// Signs and zips one pass.
pub fn build(
    pass_json: &[u8],
    assets: &PreparedAssets,
    identity: &SigningIdentity,
) -> Result<Vec<u8>, BundleError> {
    let manifest = manifest(pass_json, assets);
    let signature = identity.sign(&manifest)?;
    let capacity = pass_json.len()
        + manifest.len()
        + signature.len()
        + assets
            .files
            .iter()
            .map(|a| a.bytes.len() + 100)
            .sum::<usize>()
        + 512;
    let mut zip = ZipWriter::new(Cursor::new(Vec::with_capacity(capacity)));
    // Everything is stored: PNGs are compressed already, and deflating the few kilobytes of
    // JSON costs more per pass than the bytes it saves.
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    for (name, bytes) in [
        ("pass.json", pass_json),
        ("manifest.json", &manifest[..]),
        ("signature", &signature[..]),
    ] {
        zip.start_file(name, stored)?;
        zip.write_all(bytes)?;
    }
    for a in &assets.files {
        zip.start_file(a.name.as_str(), stored)?;
        zip.write_all(&a.bytes)?;
    }
    Ok(zip.finish()?.into_inner())
}
