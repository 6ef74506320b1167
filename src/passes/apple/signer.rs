//! The Pass Type ID signing identity and the PKCS#7 signature over `manifest.json`
//! (`shared/spec/apple-wallet.md` §1.3, §1.4, §8).

use std::path::Path;
use std::sync::OnceLock;

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::provider::Provider;
use openssl::stack::Stack;
use openssl::x509::X509;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} could not be parsed: {detail}")]
    Parse {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error("the private key does not belong to the certificate {0}")]
    KeyMismatch(String),
    #[error("the signing certificate has no {0} in its subject; is it a Pass Type ID certificate?")]
    NotAPassCertificate(&'static str),
    #[error(
        "pass type identifier {asked} / team {asked_team} does not match the signing certificate \
         (UID {cert_ptid}, OU {cert_team}); Wallet would refuse the pass"
    )]
    Mismatch {
        asked: String,
        asked_team: String,
        cert_ptid: String,
        cert_team: String,
    },
    #[error("signing failed: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

/// A certificate and key that sign passes of one pass type identifier, with the intermediate
/// (Apple's WWDR G4) embedded in every signature.
pub struct SigningIdentity {
    certificate: X509,
    key: PKey<Private>,
    chain: Stack<X509>,
    pass_type_identifier: String,
    team_identifier: String,
}

impl std::fmt::Debug for SigningIdentity {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("pass_type_identifier", &self.pass_type_identifier)
            .field("team_identifier", &self.team_identifier)
            .finish_non_exhaustive()
    }
}

impl SigningIdentity {
    pub fn new(
        certificate: X509,
        key: PKey<Private>,
        intermediate: X509,
    ) -> Result<Self, SignError> {
        if !certificate.public_key()?.public_eq(&key) {
            return Err(SignError::KeyMismatch(subject_text(&certificate)));
        }
        let pass_type_identifier = subject_entry(&certificate, Nid::USERID)
            .ok_or(SignError::NotAPassCertificate("UID"))?;
        let team_identifier = subject_entry(&certificate, Nid::ORGANIZATIONALUNITNAME)
            .ok_or(SignError::NotAPassCertificate("OU"))?;
        let mut chain = Stack::new()?;
        chain.push(intermediate)?;
        Ok(SigningIdentity {
            certificate,
            key,
            chain,
            pass_type_identifier,
            team_identifier,
        })
    }

    /// Loads a certificate and key from PEM files.
    pub fn from_pem_files(cert: &Path, key: &Path, intermediate: &Path) -> Result<Self, SignError> {
        let certificate =
            X509::from_pem(&read(cert)?).map_err(|e| parse_error("certificate", cert, e))?;
        let key = PKey::private_key_from_pem(&read(key)?)
            .map_err(|e| parse_error("private key", key, e))?;
        Self::new(certificate, key, load_certificate(intermediate)?)
    }

    /// Loads a PKCS#12 file, including Keychain exports encrypted with RC2-40, which OpenSSL 3
    /// reads only with its legacy provider loaded (§8).
    pub fn from_pkcs12_file(
        p12: &Path,
        password: &str,
        intermediate: &Path,
    ) -> Result<Self, SignError> {
        load_legacy_provider();
        let parsed = Pkcs12::from_der(&read(p12)?)
            .and_then(|p| p.parse2(password))
            .map_err(|e| parse_error("PKCS#12 file (wrong password?)", p12, e))?;
        let (Some(certificate), Some(key)) = (parsed.cert, parsed.pkey) else {
            return Err(SignError::Parse {
                what: "PKCS#12 file",
                path: p12.display().to_string(),
                detail: "it holds no certificate with a private key".into(),
            });
        };
        Self::new(certificate, key, load_certificate(intermediate)?)
    }

    /// The certificate, which also authenticates pushes to APNs.
    pub fn certificate(&self) -> &X509 {
        &self.certificate
    }

    /// The private key; for building the APNs client identity only.
    pub fn private_key(&self) -> &PKey<Private> {
        &self.key
    }

    pub fn pass_type_identifier(&self) -> &str {
        &self.pass_type_identifier
    }

    pub fn team_identifier(&self) -> &str {
        &self.team_identifier
    }

    /// Fails unless this identity may sign passes of `pass_type_identifier` for `team`.
    pub fn check_matches(&self, pass_type_identifier: &str, team: &str) -> Result<(), SignError> {
        if self.pass_type_identifier == pass_type_identifier && self.team_identifier == team {
            Ok(())
        } else {
            Err(SignError::Mismatch {
                asked: pass_type_identifier.into(),
                asked_team: team.into(),
                cert_ptid: self.pass_type_identifier.clone(),
                cert_team: self.team_identifier.clone(),
            })
        }
    }

    /// The detached DER PKCS#7 signature of `manifest`: BINARY so OpenSSL hashes the bytes as they
    /// are (no CRLF canonicalisation), with signingTime and the intermediate embedded.
    pub fn sign(&self, manifest: &[u8]) -> Result<Vec<u8>, SignError> {
        let flags = Pkcs7Flags::BINARY | Pkcs7Flags::DETACHED;
        Ok(Pkcs7::sign(&self.certificate, &self.key, &self.chain, manifest, flags)?.to_der()?)
    }

    /// Days until the first of the signing and intermediate certificates expires.
    pub fn days_until_expiry(&self) -> Option<i32> {
        let now = Asn1Time::days_from_now(0).ok()?;
        let leaf = now.diff(self.certificate.not_after()).ok()?.days;
        let chain = self
            .chain
            .iter()
            .filter_map(|c| now.diff(c.not_after()).ok().map(|d| d.days));
        chain.chain([leaf]).min()
    }
}

/// Loads a certificate in PEM or DER (Apple distributes the WWDR intermediate as DER `.cer`).
pub fn load_certificate(path: &Path) -> Result<X509, SignError> {
    let bytes = read(path)?;
    X509::from_pem(&bytes)
        .or_else(|_| X509::from_der(&bytes))
        .map_err(|e| parse_error("certificate", path, e))
}

fn load_legacy_provider() {
    static LEGACY: OnceLock<Option<Provider>> = OnceLock::new();
    LEGACY.get_or_init(|| {
        // `retain_fallbacks` keeps the default provider available next to the legacy one.
        Provider::try_load(None, "legacy", true).ok()
    });
}

fn read(path: &Path) -> Result<Vec<u8>, SignError> {
    std::fs::read(path).map_err(|source| SignError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn parse_error(what: &'static str, path: &Path, e: openssl::error::ErrorStack) -> SignError {
    SignError::Parse {
        what,
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn subject_entry(cert: &X509, nid: Nid) -> Option<String> {
    let entry = cert.subject_name().entries_by_nid(nid).next()?;
    entry.data().to_string().ok()
}

fn subject_text(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .filter_map(|e| {
            Some(format!(
                "{}={}",
                e.object().nid().short_name().ok()?,
                e.data().to_string().ok()?
            ))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
