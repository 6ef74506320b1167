//! Secret values and random identifiers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A configuration secret (a password or key): never shown by `Debug` or `Display`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// `bytes` random bytes from OpenSSL's CSPRNG, as lowercase unpadded base32.
/// Lowercase keeps serial numbers URL-friendly; 16 bytes give 26 characters and 128 bits.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    openssl::rand::rand_bytes(&mut buf).expect("OpenSSL CSPRNG failed");
    data_encoding::BASE32_NOPAD
        .encode(&buf)
        .to_ascii_lowercase()
}

/// Like [`random_token`] but uppercase: QR codes encode uppercase letters and digits in their
/// compact alphanumeric mode, so barcode values stay small and scan quickly.
pub fn random_barcode(bytes: usize) -> String {
    random_token(bytes).to_ascii_uppercase()
}

/// The SHA-256 of a random secret, as lowercase hex: what is stored of session tokens, API keys
/// and join confirmation links, so a copy of the database opens nothing.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    data_encoding::HEXLOWER.encode(&Sha256::digest(token.as_bytes()))
}

/// Compares two secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_redacted() {
        let a = random_token(16);
        let b = random_token(16);
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(random_token(32).len(), 52);
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(****)");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
