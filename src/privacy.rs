//! Personal data at rest: a member's e-mail and phone are stored sealed with AES-256-GCM
//! (OpenSSL) and found through a keyed hash (HMAC-SHA256), never as plain text.
//!
//! A key ring is one or more master keys (base64 of 32 random bytes, separated by whitespace or
//! commas; `#` starts a comment line), the first one current: values are sealed with it, and
//! the others stay readable until `tessera keys rotate` has re-sealed every value under the
//! current one. Each master key gives, through HMAC-SHA256 with fixed labels, a sealing key, a
//! lookup key and a short public id (8 hex digits) that each sealed value names.
//!
//! A sealed value is `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>` with a random 96-bit
//! nonce; its associated data names the version, key id, column and member, so a value moved to
//! another member's row or column does not open. A lookup hash is
//! `base64url(HMAC(lookup key, column ‖ value))` of the normalised value.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::symm::{Cipher, decrypt_aead, encrypt_aead};

use crate::config::PrivacyConfig;
use crate::secret::Secret;

/// Bytes of a master key.
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
const B64: data_encoding::Encoding = data_encoding::BASE64URL_NOPAD;

/// The file a key ring is made in when none is configured: `<data_dir>/privacy-key`.
pub const DEFAULT_KEY_FILE: &str = "privacy-key";

/// A sealed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Email,
    Phone,
    /// A join waiting for its e-mail to be confirmed, bound to its token's hash.
    PendingJoin,
}

impl Field {
    fn column(self) -> &'static str {
        match self {
            Field::Email => "members.email",
            Field::Phone => "members.phone",
            Field::PendingJoin => "pending_joins.payload",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivacyError {
    #[error("not a sealed value")]
    Malformed,
    /// The value names a key the ring does not hold.
    #[error(
        "sealed with key {0}, which is not in the key ring: add that key to [privacy] (after the current one) until `tessera keys rotate` has run"
    )]
    UnknownKey(String),
    /// The wrong key, a tampered value, or a value moved from another row or column.
    #[error("does not open with key {0}: altered, or moved from another row")]
    Refused(String),
}

/// One master key and what it derives.
struct Key {
    id: String,
    seal: [u8; KEY_BYTES],
    lookup: [u8; KEY_BYTES],
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = PKey::hmac(key).expect("an HMAC key");
    let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("an HMAC signer");
    for p in parts {
        signer.update(p).expect("hashing in memory");
    }
    let mut out = [0u8; 32];
    signer.sign(&mut out).expect("signing in memory");
    out
}

impl Key {
    fn derive(master: &[u8]) -> Key {
        let id = hmac(master, &[b"tessera privacy key id"]);
        Key {
            id: data_encoding::HEXLOWER.encode(&id[..4]),
            seal: hmac(master, &[b"tessera privacy seal v1"]),
            lookup: hmac(master, &[b"tessera privacy lookup v1"]),
        }
    }

    fn aad(&self, field: Field, member_id: &str) -> Vec<u8> {
        format!("v1.{}|{}|{member_id}", self.id, field.column()).into_bytes()
    }
}

/// The keys that seal and open personal data; the first is current. `Debug` shows key ids only.
pub struct KeyRing {
    keys: Vec<Key>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("ids", &self.ids()).finish()
    }
}

/// Where a ring came from, for messages and `tessera keys new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `privacy.key` (or `TESSERA_PRIVACY__KEY`).
    Value,
    /// `privacy.key_file`, or the default `<data_dir>/privacy-key`.
    File(PathBuf),
}

impl KeyRing {
    /// Reads a ring's text: base64 keys of 32 bytes, separated by whitespace or commas.
    pub fn parse(text: &str) -> anyhow::Result<KeyRing> {
        let mut keys: Vec<Key> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            for word in line.split([' ', '\t', ',']).filter(|w| !w.is_empty()) {
                let raw = data_encoding::BASE64
                    .decode(word.as_bytes())
                    .ok()
                    .filter(|k| k.len() == KEY_BYTES)
                    .with_context(|| {
                        format!(
                            "key {} of the ring is not base64 of {KEY_BYTES} bytes (make one with `tessera keys new`)",
                            keys.len() + 1
                        )
                    })?;
                let key = Key::derive(&raw);
                match keys.iter().find(|k| k.id == key.id) {
                    None => keys.push(key),
                    Some(k) if k.seal == key.seal => {}
                    // 1 in 2^32 for two random keys: values would name the wrong one.
                    Some(_) => anyhow::bail!(
                        "two keys of the ring share the id {}; replace the newer one (`tessera keys new`)",
                        key.id
                    ),
                }
            }
        }
        anyhow::ensure!(!keys.is_empty(), "the key ring holds no key");
        Ok(KeyRing { keys })
    }

    /// A new random master key, as ring text.
    pub fn new_key() -> Secret {
        let mut raw = [0u8; KEY_BYTES];
        openssl::rand::rand_bytes(&mut raw).expect("OpenSSL CSPRNG failed");
        Secret::new(data_encoding::BASE64.encode(&raw))
    }

    /// The configured ring: `privacy.key`, else `privacy.key_file`, else
    /// `<data_dir>/privacy-key`, made (0600) with a new key when missing. A key file that its
    /// group or others may read is refused. Returns the ring, where it came from, and whether
    /// the default file was just made.
    pub fn from_config(
        config: &PrivacyConfig,
        data_dir: &Path,
    ) -> anyhow::Result<(KeyRing, Source, bool)> {
        if let Some(value) = &config.key {
            anyhow::ensure!(
                config.key_file.is_none(),
                "privacy: set either key or key_file, not both"
            );
            let ring = KeyRing::parse(value.expose()).context("privacy.key")?;
            return Ok((ring, Source::Value, false));
        }
        let (path, made) = match &config.key_file {
            Some(path) => (path.clone(), false),
            None => {
                let path = data_dir.join(DEFAULT_KEY_FILE);
                let made = !path.exists();
                if made {
                    std::fs::create_dir_all(data_dir)
                        .with_context(|| format!("creating {}", data_dir.display()))?;
                    write_private(&path, &format!("{}\n", KeyRing::new_key().expose()), true)?;
                }
                (path, made)
            }
        };
        let text = read_key_file(&path)?;
        let ring = KeyRing::parse(&text).with_context(|| format!("{}", path.display()))?;
        Ok((ring, Source::File(path), made))
    }

    /// The current key's id: what `seal` writes.
    pub fn current(&self) -> &str {
        &self.keys[0].id
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// `value` sealed with the current key for `field` of `member_id`.
    pub fn seal(&self, field: Field, member_id: &str, value: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        openssl::rand::rand_bytes(&mut nonce).expect("OpenSSL CSPRNG failed");
        let mut tag = [0u8; TAG_BYTES];
        let sealed = encrypt_aead(
            Cipher::aes_256_gcm(),
            &key.seal,
            Some(&nonce),
            &key.aad(field, member_id),
            value.as_bytes(),
            &mut tag,
        )
        .expect("AES-256-GCM in memory");
        let mut body = Vec::with_capacity(NONCE_BYTES + sealed.len() + TAG_BYTES);
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&sealed);
        body.extend_from_slice(&tag);
        format!("v1.{}.{}", key.id, B64.encode(&body))
    }

    /// The key id a sealed value names, if it is one.
    pub fn key_of(stored: &str) -> Option<&str> {
        let rest = stored.strip_prefix("v1.")?;
        rest.split_once('.').map(|(id, _)| id)
    }

    /// Opens a value `seal` made for `field` of `member_id`, with whichever ring key it names.
    pub fn open(
        &self,
        field: Field,
        member_id: &str,
        stored: &str,
    ) -> Result<String, PrivacyError> {
        let rest = stored.strip_prefix("v1.").ok_or(PrivacyError::Malformed)?;
        let (id, body) = rest.split_once('.').ok_or(PrivacyError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| PrivacyError::UnknownKey(id.to_string()))?;
        let body = B64
            .decode(body.as_bytes())
            .map_err(|_| PrivacyError::Malformed)?;
        if body.len() < NONCE_BYTES + TAG_BYTES {
            return Err(PrivacyError::Malformed);
        }
        let (nonce, rest) = body.split_at(NONCE_BYTES);
        let (sealed, tag) = rest.split_at(rest.len() - TAG_BYTES);
        let plain = decrypt_aead(
            Cipher::aes_256_gcm(),
            &key.seal,
            Some(nonce),
            &key.aad(field, member_id),
            sealed,
            tag,
        )
        .map_err(|_| PrivacyError::Refused(id.to_string()))?;
        String::from_utf8(plain).map_err(|_| PrivacyError::Refused(id.to_string()))
    }

    /// The lookup hash of a normalised value under the current key.
    pub fn lookup(&self, field: Field, value: &str) -> String {
        Self::lookup_with(&self.keys[0], field, value)
    }

    /// The lookup hashes under every key of the ring, current first: a value sealed before a
    /// rotation finished is found by its old key's hash.
    pub fn lookups(&self, field: Field, value: &str) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| Self::lookup_with(k, field, value))
            .collect()
    }

    fn lookup_with(key: &Key, field: Field, value: &str) -> String {
        B64.encode(&hmac(
            &key.lookup,
            &[field.column().as_bytes(), b"|", value.as_bytes()],
        ))
    }
}

/// Puts a new key in front of the ring in `path`, keeping the old keys after it so their values
/// stay readable until `tessera keys rotate` has run. Returns the new key's id.
pub fn add_key_to_file(path: &Path) -> anyhow::Result<String> {
    let old = read_key_file(path)?;
    KeyRing::parse(&old).with_context(|| format!("{}", path.display()))?;
    let key = KeyRing::new_key();
    write_private(path, &format!("{}\n{old}", key.expose()), false)?;
    Ok(KeyRing::parse(key.expose())?.current().to_string())
}

/// Reads a key file, refusing one its group or others may read or write.
pub fn read_key_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the privacy key file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the privacy key file {} has mode {mode:04o}: its group or others may read it; make it the owner's only (chmod 600 {})",
        path.display(),
        path.display()
    );
    std::fs::read_to_string(path)
        .with_context(|| format!("reading the privacy key file {}", path.display()))
}

/// Writes `text` to `path` with mode 0600: a new file (`create_new`), or in place of the old
/// one through a temporary file and a rename, so a crash leaves the old ring or the new.
pub fn write_private(path: &Path, text: &str, create_new: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let target = if create_new {
        path.to_path_buf()
    } else {
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        PathBuf::from(name)
    };
    if !create_new {
        let _ = std::fs::remove_file(&target);
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .with_context(|| format!("creating {}", target.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", target.display()))?;
    if !create_new {
        std::fs::rename(&target, path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
