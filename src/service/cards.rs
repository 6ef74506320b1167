//! The card service: turns stored programs, templates and members into signed passes.
//! The API and the public download route both go through it; it holds the signers and the
//! per-template-version image cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;

pub use super::ServiceError;
use crate::domain::template::{Standing, checks};
use crate::domain::{Invalid, Member, NewMember, Pass, Program, Template, TemplateDesign};
use crate::enrollment::links::LinkSigner;
use crate::passes::apple::bundle;
use crate::passes::apple::images::{self, ImageKind};
use crate::passes::apple::pass_json::{self, PassContent};
use crate::passes::apple::{AssetCache, PreparedAssets, SignError, Signers};
use crate::secret::constant_time_eq;
use crate::storage::{StorageError, Store};

pub struct Cards {
    store: Store,
    signers: Arc<Signers>,
    assets: AssetCache,
    web_service_url: String,
    /// Signed passes by serial, with the `updated_at` they were built at.
    signed: Mutex<HashMap<String, (i64, Bytes)>>,
    /// The public base URL and the signer of the account-page links on the back of the card.
    account_links: Option<(String, Arc<LinkSigner>)>,
}

/// Signed passes kept for devices that fetch an unchanged pass (about 30 KB each).
const SIGNED_CACHE_ENTRIES: usize = 4096;

/// A signed `.pkpass` and the pass it was built from.
pub struct SignedPass {
    pub pass: Pass,
    pub bytes: Vec<u8>,
}

impl Cards {
    pub fn new(store: Store, signers: Signers, web_service_url: String) -> Cards {
        Cards {
            store,
            signers: Arc::new(signers),
            assets: AssetCache::default(),
            web_service_url,
            signed: Mutex::default(),
            account_links: None,
        }
    }

    /// Puts a link to the member's account page (`/me/<token>`) on the back of every live card.
    pub fn with_account_links(mut self, public_base: &str, links: Arc<LinkSigner>) -> Cards {
        self.account_links = Some((public_base.to_string(), links));
        self
    }

    pub fn signers(&self) -> &Signers {
        &self.signers
    }

    /// The signers, shared with the push dispatcher (which pushes with the same identities).
    pub fn shared_signers(&self) -> Arc<Signers> {
        self.signers.clone()
    }

    /// Refuses a program whose identifiers no configured identity can sign for: such passes
    /// would be refused by Wallet without a word (`apple-wallet.md` §9.1).
    pub fn check_program_signable(
        &self,
        pass_type_identifier: &str,
        team: &str,
    ) -> Result<(), ServiceError> {
        match self.signers.identity_for(pass_type_identifier, team) {
            Ok(_) => Ok(()),
            Err(e @ SignError::Mismatch { .. }) => {
                Err(Invalid::one("pass_type_identifier", e.to_string()).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Validates a design, renders its uploads, and stores it as a new template.
    /// An icon is required: Wallet opens no pass without `icon.png`.
    pub async fn create_template(
        &self,
        program_id: &str,
        name: &str,
        design: TemplateDesign,
        uploads: Vec<(ImageKind, Vec<u8>)>,
    ) -> Result<Template, ServiceError> {
        let mut problems = Vec::new();
        let design = design
            .validate()
            .map_err(|e| problems.extend(e.problems))
            .ok();
        let mut c = crate::domain::Checker::default();
        crate::domain::check_text(&mut c, "name", name, crate::domain::MAX_TEMPLATE_NAME);
        if let Err(e) = c.finish() {
            problems.extend(e.problems);
        }
        if !uploads.iter().any(|(k, _)| *k == ImageKind::Icon) {
            problems.push(
                Invalid::one(
                    "images.icon",
                    "images.icon is required: Apple Wallet does not open a pass without icon.png",
                )
                .problems
                .remove(0),
            );
        }
        let rendered = render_uploads(uploads).await;
        let files = match rendered {
            Ok(files) => files,
            Err(e) => {
                problems.extend(e.problems);
                Vec::new()
            }
        };
        match design {
            Some(design) if problems.is_empty() => Ok(self
                .store
                .insert_template(program_id, name, &design, &files)
                .await?),
            _ => Err(Invalid { problems }.into()),
        }
    }

    /// Replaces one image of a template (a new template version).
    pub async fn replace_image(
        &self,
        template_id: &str,
        kind: ImageKind,
        bytes: Vec<u8>,
    ) -> Result<Template, ServiceError> {
        let files = render_uploads(vec![(kind, bytes)]).await?;
        Ok(self
            .store
            .replace_template_images(template_id, &files)
            .await?)
    }

    /// Renders an upload and puts it in the template's draft (a new draft if none exists).
    pub async fn upload_draft_image(
        &self,
        template_id: &str,
        kind: ImageKind,
        bytes: Vec<u8>,
    ) -> Result<(), ServiceError> {
        let files = render_uploads(vec![(kind, bytes)]).await?;
        Ok(self
            .store
            .put_draft_image(template_id, kind.name(), &files)
            .await?)
    }

    /// Every pre-publish finding for the template's draft.
    pub async fn draft_findings(&self, draft: &crate::storage::Draft) -> Vec<checks::Finding> {
        checks::pre_publish(
            &draft.design,
            images_present(&draft.image_names),
            crate::domain::now_ms(),
        )
    }

    /// Publishes the template's draft if no check finds an error: it becomes the version every
    /// holder's card shows, and a background job marks their passes changed and pushes them.
    pub async fn publish_draft(
        &self,
        template_id: &str,
        by: &str,
    ) -> Result<(Template, crate::storage::PublishJob), ServiceError> {
        // The draft is checked inside the publish transaction, so an edit saved between the
        // check and the publish can never go out unchecked.
        let check = |draft: &crate::storage::Draft| -> Result<TemplateDesign, Invalid> {
            let findings = checks::pre_publish(
                &draft.design,
                images_present(&draft.image_names),
                crate::domain::now_ms(),
            );
            let problems: Vec<_> = checks::errors(&findings)
                .map(|f| crate::domain::Problem {
                    field: f.field.clone(),
                    message: f.message.clone(),
                })
                .collect();
            if !problems.is_empty() {
                return Err(Invalid { problems });
            }
            draft.design.clone().validate()
        };
        let published = self
            .store
            .publish_template(template_id, check, by, crate::domain::now_ms())
            .await??;
        tracing::info!(template = %template_id, version = published.0.version, holders = published.1.total, by, "template published");
        Ok(published)
    }

    /// Creates a member and their pass on the program's newest template.
    pub async fn create_member(
        &self,
        program: &Program,
        new: &NewMember,
    ) -> Result<(Member, Pass), ServiceError> {
        new.validate()?;
        let Some(template) = self.store.latest_template(&program.id).await? else {
            return Err(Invalid::one(
                "program_id",
                "the program has no card template yet; create one first",
            )
            .into());
        };
        Ok(self.store.insert_member(program, &template, new).await?)
    }

    /// The signed pass with this serial, if `token` is its download token and the card has
    /// not ended.
    /// An unknown serial and a wrong token are the same `None`, so tokens cannot be probed.
    pub async fn pkpass_with_token(
        &self,
        serial: &str,
        token: &str,
    ) -> Result<Option<SignedPass>, ServiceError> {
        let pass = match self.store.get_pass(serial).await {
            Ok(p) => p,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // The link's own token, never the PassKit one; an ended card's link is dead.
        if !constant_time_eq(pass.download_token.as_bytes(), token.as_bytes())
            || pass.ended_at.is_some()
        {
            return Ok(None);
        }
        let bytes = self.pkpass(&pass).await?;
        Ok(Some(SignedPass { pass, bytes }))
    }

    /// Builds and signs the pass as it stands now.
    pub async fn pkpass(&self, pass: &Pass) -> Result<Vec<u8>, ServiceError> {
        let member = self.store.get_member(&pass.member_id).await?;
        let program = self.store.get_program(&member.program_id).await?;
        let template = self.store.get_template(&pass.template_id).await?;
        let assets = self.assets_for(&template).await?;
        let identity = self
            .signers
            .identity_for(&program.pass_type_identifier, &program.team_identifier)?;
        // Tier progress and expiry cost two queries: only for designs that show them.
        let standing = if template.design.uses_standing() {
            Some(
                self.store
                    .member_standing(&member.id, &program.rules, crate::domain::now_ms())
                    .await?,
            )
        } else {
            None
        };
        let account_url = match (&self.account_links, pass.ended_at) {
            (Some((base, links)), None) => {
                let generations = self
                    .store
                    .card_generations(std::slice::from_ref(&member.id))
                    .await?;
                let generation = generations.get(&member.id).copied().unwrap_or(0);
                Some(format!(
                    "{base}/me/{}",
                    links.sign_account(&member.id, generation)
                ))
            }
            _ => None,
        };
        let next = program.rules.next_tier(member.tier.as_deref());
        let standing = standing.map_or_else(Standing::default, |s| Standing {
            next_tier: next.map_or("", |t| t.name.as_str()),
            points_to_next_tier: next.map_or(0, |t| (t.threshold - s.qualifying).max(0)),
            next_expiry: s.next_expiry,
            held: s.held,
        });
        let json = pass_json::render(&PassContent {
            program: &program,
            template: &template,
            member: &member,
            pass,
            web_service_url: &self.web_service_url,
            standing,
            // An ended card is voided; no card has an end date yet.
            state: pass.state(),
            expires_at: None,
            account_url: account_url.as_deref(),
        });
        Ok(bundle::build(&json, &assets, &identity)?)
    }

    /// A signed pass of a design that is not published yet, for the sample member the
    /// designer previews: what a marketer downloads to try on a phone.
    pub async fn sample_pkpass(
        &self,
        program: &Program,
        template: &Template,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<u8>, ServiceError> {
        let identity = self
            .signers
            .identity_for(&program.pass_type_identifier, &program.team_identifier)?;
        let now = crate::domain::now_ms();
        let sample = checks::sample_substitutions(&program.name, now);
        let member = Member {
            id: "sample".into(),
            program_id: program.id.clone(),
            display_name: sample.member_name.into(),
            external_id: Some(sample.external_id.into()),
            barcode: sample.barcode.into(),
            points: sample.balance,
            tier: Some(sample.tier.into()),
            created_at: now,
        };
        let pass = Pass {
            serial_number: format!("sample-{}", template.id),
            member_id: member.id.clone(),
            template_id: template.id.clone(),
            pass_type_identifier: program.pass_type_identifier.clone(),
            // A sample is never registered for updates: no web service, a throwaway token.
            authentication_token: crate::secret::random_token(32),
            created_at: now,
            updated_at: now,
            last_fetched_at: None,
            download_token: crate::secret::random_token(32),
            ended_at: None,
        };
        let mut files = files;
        files.extend(template.design.pass_strings());
        let assets = PreparedAssets::new(template.version, files);
        let json = pass_json::render(&PassContent {
            program,
            template,
            member: &member,
            pass: &pass,
            web_service_url: &self.web_service_url,
            standing: sample.standing,
            state: crate::domain::CardState::Active,
            expires_at: None,
            account_url: None,
        });
        Ok(bundle::build(&json, &assets, &identity)?)
    }

    /// The signed pass, from the cache when the pass has not changed since it was built.
    /// Invariant: everything a pass shows bumps `passes.updated_at`, so the key is exact.
    pub async fn pkpass_cached(&self, pass: &Pass) -> Result<Bytes, ServiceError> {
        let key = &pass.serial_number;
        if let Some((at, bytes)) = self.signed.lock().expect("pass cache poisoned").get(key)
            && *at == pass.updated_at
        {
            return Ok(bytes.clone());
        }
        let bytes = Bytes::from(self.pkpass(pass).await?);
        let mut cache = self.signed.lock().expect("pass cache poisoned");
        if cache.len() >= SIGNED_CACHE_ENTRIES && !cache.contains_key(key) {
            // Crude but bounded: forget everything rather than track recency.
            cache.clear();
        }
        cache.insert(key.clone(), (pass.updated_at, bytes.clone()));
        Ok(bytes)
    }

    async fn assets_for(&self, template: &Template) -> Result<Arc<PreparedAssets>, ServiceError> {
        if let Some(a) = self.assets.get(&template.id, template.version) {
            return Ok(a);
        }
        let mut files = self.store.template_images(&template.id).await?;
        files.extend(template.design.pass_strings());
        let prepared = Arc::new(PreparedAssets::new(template.version, files));
        self.assets.put(&template.id, prepared.clone());
        Ok(prepared)
    }
}

/// Which of the images a storeCard needs are among `names`.
pub fn images_present(names: &[String]) -> checks::ImagesPresent {
    let has = |f: &str| names.iter().any(|n| n == f);
    checks::ImagesPresent {
        icon: has("icon.png"),
        logo: has("logo.png"),
        strip: has("strip.png"),
    }
}

/// Decodes and resizes uploads off the async threads; image work takes tens of milliseconds.
pub async fn render_uploads(
    uploads: Vec<(ImageKind, Vec<u8>)>,
) -> Result<Vec<(String, Vec<u8>)>, Invalid> {
    tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for (kind, bytes) in uploads {
            match images::process(kind, &bytes) {
                Ok(scaled) => files.extend(scaled),
                Err(e) => problems.extend(
                    Invalid::one(format!("images.{}", kind.name()), e.to_string()).problems,
                ),
            }
        }
        if problems.is_empty() {
            Ok(files)
        } else {
            Err(Invalid { problems })
        }
    })
    .await
    .expect("image rendering panicked")
}
