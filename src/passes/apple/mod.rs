//! Apple Wallet storeCards: `pass.json`, images, manifest, PKCS#7 signature and the `.pkpass`
//! zip. Follows `shared/spec/apple-wallet.md`.
//!
//! Invariant: this module knows neither HTTP nor SQL; it turns plain values into bytes.

pub mod bundle;
pub mod dev_certs;
pub mod images;
pub mod pass_json;
pub mod signer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use bundle::{CONTENT_TYPE, PreparedAssets};
pub use signer::{SignError, SigningIdentity};

use crate::config::AppleConfig;
use dev_certs::DevAuthority;

/// Pass type identifier and team used for the demo program under the development identity.
pub const DEV_PASS_TYPE_IDENTIFIER: &str = "pass.dev.tessera.demo";
pub const DEV_TEAM_IDENTIFIER: &str = "TESSERADEV";

/// Where pass signatures come from: the configured Pass Type ID identity, or the development CA.
pub enum Signers {
    Configured(Arc<SigningIdentity>),
    Dev(DevAuthority),
}

impl Signers {
    /// The configured identity, or else the development CA in `<data_dir>/dev-certs`.
    pub fn from_config(apple: &AppleConfig, data_dir: &Path) -> Result<Signers, SignError> {
        let wwdr = apple.wwdr_certificate.as_deref();
        let identity = match (&apple.certificate, &apple.private_key, &apple.pkcs12, wwdr) {
            (Some(cert), Some(key), None, Some(wwdr)) => {
                SigningIdentity::from_pem_files(cert, key, wwdr)?
            }
            (None, None, Some(p12), Some(wwdr)) => {
                let password = apple
                    .pkcs12_password
                    .as_ref()
                    .map(|s| s.expose())
                    .unwrap_or("");
                SigningIdentity::from_pkcs12_file(p12, password, wwdr)?
            }
            _ => {
                return Ok(Signers::Dev(DevAuthority::open_or_create(
                    &data_dir.join("dev-certs"),
                )?));
            }
        };
        Ok(Signers::Configured(Arc::new(identity)))
    }

    pub fn is_dev(&self) -> bool {
        matches!(self, Signers::Dev(_))
    }

    /// The identity that signs passes of this type, or why there is none.
    pub fn identity_for(
        &self,
        pass_type_identifier: &str,
        team: &str,
    ) -> Result<Arc<SigningIdentity>, SignError> {
        match self {
            Signers::Configured(identity) => {
                identity.check_matches(pass_type_identifier, team)?;
                Ok(identity.clone())
            }
            Signers::Dev(ca) => ca.identity(pass_type_identifier, team),
        }
    }

    /// The pass type identifier and team the demo program uses.
    pub fn default_identifiers(&self) -> (String, String) {
        match self {
            Signers::Configured(i) => (i.pass_type_identifier().into(), i.team_identifier().into()),
            Signers::Dev(_) => (DEV_PASS_TYPE_IDENTIFIER.into(), DEV_TEAM_IDENTIFIER.into()),
        }
    }
}

/// Prepared image sets by template id; an entry is used only for the version it was built from,
/// so a changed template is never served with old images.
#[derive(Default)]
pub struct AssetCache {
    by_template: Mutex<HashMap<String, Arc<PreparedAssets>>>,
}

impl AssetCache {
    pub fn get(&self, template_id: &str, version: i64) -> Option<Arc<PreparedAssets>> {
        let map = self.by_template.lock().expect("asset cache poisoned");
        map.get(template_id)
            .filter(|a| a.version == version)
            .cloned()
    }

    pub fn put(&self, template_id: &str, assets: Arc<PreparedAssets>) {
        let mut map = self.by_template.lock().expect("asset cache poisoned");
        match map.get(template_id) {
            Some(existing) if existing.version > assets.version => {}
            _ => {
                map.insert(template_id.to_string(), assets);
            }
        }
    }
}

#[cfg(test)]
mod tests;
