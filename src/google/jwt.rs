//! Compact JWS signing and checking with OpenSSL: RS256 for Google's grants and save links.
//! OpenSSL is already linked for pass signing; it keeps RSA private-key operations constant
//! time, which the pure-Rust `rsa` crate (jsonwebtoken's `rust_crypto` backend) does not promise.

use openssl::hash::MessageDigest;
use openssl::pkey::{HasPrivate, HasPublic, PKeyRef};
use openssl::sign::{Signer, Verifier};
use serde_json::Value;

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(bytes)
}

/// `header.claims.signature`, RS256.
pub fn sign_rs256<T: HasPrivate>(
    key: &PKeyRef<T>,
    header: &Value,
    claims: &Value,
) -> Result<String, openssl::error::ErrorStack> {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signer = Signer::new(MessageDigest::sha256(), key)?;
    signer.update(input.as_bytes())?;
    let signature = signer.sign_to_vec()?;
    Ok(format!("{input}.{}", b64(&signature)))
}

/// The header and claims of an RS256 JWT whose signature verifies with `key`; `None` otherwise.
pub fn verify_rs256<T: HasPublic>(key: &PKeyRef<T>, token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |p: &str| data_encoding::BASE64URL_NOPAD.decode(p.as_bytes()).ok();
    let header: Value = serde_json::from_slice(&decode(h)?).ok()?;
    if header["alg"] != "RS256" {
        return None;
    }
    let mut verifier = Verifier::new(MessageDigest::sha256(), key).ok()?;
    verifier.update(format!("{h}.{c}").as_bytes()).ok()?;
    if !verifier.verify(&decode(s)?).ok()? {
        return None;
    }
    Some((header, serde_json::from_slice(&decode(c)?).ok()?))
}

#[cfg(test)]
mod tests {
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use serde_json::json;

    #[test]
    fn signed_tokens_verify_and_tampered_ones_do_not() {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let other = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let token = super::sign_rs256(
            &key,
            &json!({"alg": "RS256", "typ": "JWT"}),
            &json!({"a": 1}),
        )
        .unwrap();
        let (_, claims) = super::verify_rs256(&key, &token).unwrap();
        assert_eq!(claims["a"], 1);
        assert!(super::verify_rs256(&other, &token).is_none());
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = super::b64(br#"{"a":2}"#);
        parts[1] = &forged;
        assert!(super::verify_rs256(&key, &parts.join(".")).is_none());
    }
}
