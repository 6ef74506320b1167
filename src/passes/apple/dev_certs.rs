//! A throwaway certificate authority for development and tests: a root CA, an intermediate in
//! the place of Apple's WWDR, and Pass Type ID certificates minted for any pass type identifier.
//! Passes it signs verify against its root (`openssl smime -verify -CAfile root-ca.pem`) and
//! never install on a real device.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use openssl::x509::{X509, X509Builder, X509Name, X509NameBuilder};

use super::signer::{SignError, SigningIdentity};

pub const ROOT_CA_FILE: &str = "root-ca.pem";
const ROOT_KEY_FILE: &str = "root-ca.key";
pub const INTERMEDIATE_FILE: &str = "wwdr-dev.pem";
const INTERMEDIATE_KEY_FILE: &str = "wwdr-dev.key";
pub const PASS_KEY_FILE: &str = "pass.key";

/// The dev CA kept as PEM files in one folder, created on first use.
pub struct DevAuthority {
    dir: PathBuf,
    intermediate: X509,
    intermediate_key: PKey<Private>,
    pass_key: PKey<Private>,
    minted: Mutex<HashMap<(String, String), Arc<SigningIdentity>>>,
}

impl DevAuthority {
    /// Opens the CA in `dir`, creating its files if any is missing.
    pub fn open_or_create(dir: &Path) -> Result<DevAuthority, SignError> {
        let io = |e: std::io::Error| SignError::Read {
            path: dir.display().to_string(),
            source: e,
        };
        let files = [
            ROOT_CA_FILE,
            ROOT_KEY_FILE,
            INTERMEDIATE_FILE,
            INTERMEDIATE_KEY_FILE,
            PASS_KEY_FILE,
        ];
        if !files.iter().all(|f| dir.join(f).exists()) {
            fs::create_dir_all(dir).map_err(io)?;
            let root_key = new_key()?;
            let root = build_cert(
                &name(&[("CN", "Tessera Development Root CA"), ("O", "Tessera dev")])?,
                &root_key,
                None,
                true,
                3650,
            )?;
            let int_key = new_key()?;
            let int_name = name(&[
                ("CN", "Tessera Development WWDR Intermediate"),
                ("OU", "G4"),
                ("O", "Tessera dev"),
            ])?;
            let intermediate =
                build_cert(&int_name, &int_key, Some((&root, &root_key)), true, 3650)?;
            let pass_key = new_key()?;
            write_private(
                &dir.join(ROOT_KEY_FILE),
                &root_key.private_key_to_pem_pkcs8()?,
            )
            .map_err(io)?;
            write_private(
                &dir.join(INTERMEDIATE_KEY_FILE),
                &int_key.private_key_to_pem_pkcs8()?,
            )
            .map_err(io)?;
            write_private(
                &dir.join(PASS_KEY_FILE),
                &pass_key.private_key_to_pem_pkcs8()?,
            )
            .map_err(io)?;
            fs::write(dir.join(ROOT_CA_FILE), root.to_pem()?).map_err(io)?;
            fs::write(dir.join(INTERMEDIATE_FILE), intermediate.to_pem()?).map_err(io)?;
        }
        let read_key = |f: &str| -> Result<PKey<Private>, SignError> {
            let bytes = fs::read(dir.join(f)).map_err(io)?;
            Ok(PKey::private_key_from_pem(&bytes)?)
        };
        let intermediate = X509::from_pem(&fs::read(dir.join(INTERMEDIATE_FILE)).map_err(io)?)?;
        Ok(DevAuthority {
            dir: dir.to_path_buf(),
            intermediate,
            intermediate_key: read_key(INTERMEDIATE_KEY_FILE)?,
            pass_key: read_key(PASS_KEY_FILE)?,
            minted: Mutex::new(HashMap::new()),
        })
    }

    pub fn root_ca_path(&self) -> PathBuf {
        self.dir.join(ROOT_CA_FILE)
    }

    /// A Pass Type ID certificate for `pass_type_identifier` and `team`, shaped like Apple's:
    /// `UID=<pass type id>, CN=Pass Type ID: <pass type id>, OU=<team>, O=<organization>`.
    pub fn mint(
        &self,
        pass_type_identifier: &str,
        team: &str,
        organization: &str,
    ) -> Result<X509, SignError> {
        let subject = name(&[
            ("UID", pass_type_identifier),
            ("CN", &format!("Pass Type ID: {pass_type_identifier}")),
            ("OU", team),
            ("O", organization),
        ])?;
        build_cert(
            &subject,
            &self.pass_key,
            Some((&self.intermediate, &self.intermediate_key)),
            false,
            825,
        )
    }

    /// The identity for a pass type, minted on first use and kept for the life of the process.
    pub fn identity(
        &self,
        pass_type_identifier: &str,
        team: &str,
    ) -> Result<Arc<SigningIdentity>, SignError> {
        let key = (pass_type_identifier.to_string(), team.to_string());
        let mut minted = self.minted.lock().expect("dev identity cache poisoned");
        if let Some(identity) = minted.get(&key) {
            return Ok(identity.clone());
        }
        let cert = self.mint(pass_type_identifier, team, "Tessera development")?;
        let identity = Arc::new(SigningIdentity::new(
            cert,
            self.pass_key.clone(),
            self.intermediate.clone(),
        )?);
        minted.insert(key, identity.clone());
        Ok(identity)
    }

    /// Writes `pass.pem` for one pass type next to the CA, so the folder can be configured as a
    /// regular identity (`apple.certificate`, `apple.private_key`, `apple.wwdr_certificate`).
    pub fn write_pass_certificate(
        &self,
        pass_type_identifier: &str,
        team: &str,
    ) -> Result<PathBuf, SignError> {
        let cert = self.mint(pass_type_identifier, team, "Tessera development")?;
        let path = self.dir.join("pass.pem");
        fs::write(&path, cert.to_pem()?).map_err(|e| SignError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Ok(path)
    }
}

fn new_key() -> Result<PKey<Private>, SignError> {
    Ok(PKey::from_rsa(Rsa::generate(2048)?)?)
}

fn name(entries: &[(&str, &str)]) -> Result<X509Name, SignError> {
    let mut b = X509NameBuilder::new()?;
    for (field, value) in entries {
        b.append_entry_by_text(field, value)?;
    }
    Ok(b.build())
}

fn build_cert(
    subject: &X509Name,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
    days: u32,
) -> Result<X509, SignError> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer.map_or(subject, |(cert, _)| cert.subject_name()))?;
    b.set_pubkey(key)?;
    let (not_before, not_after) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(days)?);
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
    } else {
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    }
    let ski =
        SubjectKeyIdentifier::new().build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))?;
    b.append_extension(ski)?;
    b.sign(issuer.map_or(key, |(_, k)| k), MessageDigest::sha256())?;
    Ok(b.build())
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, pem: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pem)
}
