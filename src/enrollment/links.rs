//! Personal install links: `/card/<member id>.<expiry>.<signature>`, signed with HMAC-SHA256,
//! one member each, expiring. They go out in e-mail and SMS campaigns and after joining; the
//! page they open offers the member's own card and nothing else.

use std::path::Path;

use anyhow::Context;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

use crate::config::EnrollmentConfig;
use crate::secret::constant_time_eq;

pub struct LinkSigner {
    key: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LinkError {
    #[error("this link is not one of ours")]
    Invalid,
    #[error("this link has expired; ask for a new one")]
    Expired,
}

/// Bytes of the HMAC kept in a link: 128 bits, as unguessable as a serial number.
const MAC_BYTES: usize = 16;

impl LinkSigner {
    pub fn new(key: Vec<u8>) -> LinkSigner {
        LinkSigner { key }
    }

    /// The configured secret, or one made once in `<data_dir>/link-secret` (mode 0600).
    pub fn from_config(config: &EnrollmentConfig, data_dir: &Path) -> anyhow::Result<LinkSigner> {
        if let Some(s) = &config.link_secret {
            anyhow::ensure!(
                s.expose().len() >= 16,
                "enrollment.link_secret must have at least 16 characters"
            );
            return Ok(LinkSigner::new(s.expose().as_bytes().to_vec()));
        }
        let path = data_dir.join("link-secret");
        if let Ok(key) = std::fs::read(&path) {
            return Ok(LinkSigner::new(key));
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let key = crate::secret::random_token(32).into_bytes();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(&key)?;
        Ok(LinkSigner::new(key))
    }

    /// The MAC over the member, the expiry and the card's generation (how many times it was
    /// reissued), so a link sent before a reissue does not open the new card. Generation 0 signs
    /// what links signed before reissues existed, so those keep working.
    fn mac(&self, member_id: &str, expires_at: i64, generation: i64) -> String {
        let key = PKey::hmac(&self.key).expect("an HMAC key");
        let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("an HMAC signer");
        let message = match generation {
            0 => format!("install:{member_id}.{expires_at}"),
            g => format!("install:{member_id}.{expires_at}.{g}"),
        };
        signer
            .update(message.as_bytes())
            .expect("hashing in memory");
        let mac = signer.sign_to_vec().expect("signing in memory");
        data_encoding::BASE32_NOPAD
            .encode(&mac[..MAC_BYTES])
            .to_lowercase()
    }

    /// The token for `member_id`'s first card, valid until `expires_at` (seconds since the
    /// epoch).
    pub fn sign(&self, member_id: &str, expires_at: i64) -> String {
        self.sign_generation(member_id, expires_at, 0)
    }

    /// The token for `member_id`'s card of this generation (0 until it is reissued).
    pub fn sign_generation(&self, member_id: &str, expires_at: i64, generation: i64) -> String {
        format!(
            "{member_id}.{expires_at}.{}",
            self.mac(member_id, expires_at, generation)
        )
    }

    /// The token of the member's own account page (`/me/<token>`, linked from the back of the
    /// card): no expiry (it rides on the card), signed for the card's generation so a reissue
    /// retires the old card's link.
    pub fn sign_account(&self, member_id: &str, generation: i64) -> String {
        format!("{member_id}.0.{}", self.account_mac(member_id, generation))
    }

    /// The member an account-page token names, if it is ours and for the card's `generation`.
    pub fn verify_account(&self, token: &str, generation: i64) -> Result<String, LinkError> {
        let mut parts = token.rsplitn(3, '.');
        let (Some(mac), Some("0"), Some(member)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Invalid);
        };
        if !constant_time_eq(
            mac.as_bytes(),
            self.account_mac(member, generation).as_bytes(),
        ) {
            return Err(LinkError::Invalid);
        }
        Ok(member.to_string())
    }

    fn account_mac(&self, member_id: &str, generation: i64) -> String {
        // A purpose of its own: an account token is never an install link, nor the reverse.
        self.mac(&format!("account:{member_id}"), 0, generation)
    }

    /// The member a token names, before it is verified (to look up its card's generation).
    pub fn member_of(token: &str) -> Option<&str> {
        token.rsplitn(3, '.').nth(2)
    }

    /// The member a token for a first card names, if it is ours and unexpired at `now`
    /// (seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<String, LinkError> {
        self.verify_generation(token, now, 0)
    }

    /// The member a token names, if it is ours, unexpired at `now` (seconds) and signed for the
    /// card's current `generation`.
    pub fn verify_generation(
        &self,
        token: &str,
        now: i64,
        generation: i64,
    ) -> Result<String, LinkError> {
        let mut parts = token.rsplitn(3, '.');
        let (Some(mac), Some(exp), Some(member)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(LinkError::Invalid);
        };
        let expires_at: i64 = exp.parse().map_err(|_| LinkError::Invalid)?;
        if !constant_time_eq(
            mac.as_bytes(),
            self.mac(member, expires_at, generation).as_bytes(),
        ) {
            return Err(LinkError::Invalid);
        }
        if expires_at < now {
            return Err(LinkError::Expired);
        }
        Ok(member.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_names_one_member_until_it_expires() {
        let s = LinkSigner::new(b"0123456789abcdef0123".to_vec());
        let t = s.sign("01a2-member", 1_000);
        assert_eq!(s.verify(&t, 999).unwrap(), "01a2-member");
        assert_eq!(s.verify(&t, 1_001), Err(LinkError::Expired));
        let other = t.replace("01a2-member", "01a3-member");
        assert_eq!(
            s.verify(&other, 999),
            Err(LinkError::Invalid),
            "the signature covers the member"
        );
        let later = t.replace(".1000.", ".9000.");
        assert_eq!(
            s.verify(&later, 999),
            Err(LinkError::Invalid),
            "and the expiry"
        );
        assert_eq!(s.verify("garbage", 0), Err(LinkError::Invalid));
        assert_eq!(LinkSigner::member_of(&t), Some("01a2-member"));
        assert_eq!(
            s.verify_generation(&t, 999, 1),
            Err(LinkError::Invalid),
            "a link for the first card does not open a reissued one"
        );
        let reissued = s.sign_generation("01a2-member", 1_000, 1);
        assert_eq!(
            s.verify_generation(&reissued, 999, 1).unwrap(),
            "01a2-member"
        );
        assert_eq!(s.verify(&reissued, 999), Err(LinkError::Invalid));
        let account = s.sign_account("01a2-member", 0);
        assert_eq!(s.verify_account(&account, 0).unwrap(), "01a2-member");
        assert_eq!(s.verify_account(&account, 1), Err(LinkError::Invalid));
        assert_eq!(
            s.verify(&account, 0),
            Err(LinkError::Invalid),
            "not an install link"
        );
        assert_eq!(s.verify_account(&t, 0), Err(LinkError::Invalid));
        let elsewhere = LinkSigner::new(b"another secret of ours".to_vec());
        assert_eq!(elsewhere.verify(&t, 999), Err(LinkError::Invalid));
    }
}
