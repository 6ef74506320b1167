//! Back-of-card information every loyalty card carries: store addresses and opening hours,
//! website and social links, support contacts, current offers, terms. The designer edits it as
//! structured data; both wallets receive it as back fields (Apple) or text and link modules
//! (Google), made here.

use serde::{Deserialize, Serialize};

use super::FieldSpec;
use crate::domain::Checker;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardInfo {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<StoreInfo>,
    /// `https://…`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub social: Vec<LinkInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offers: Vec<OfferInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreInfo {
    pub name: String,
    #[serde(default)]
    pub address: String,
    /// Free text, one line per day range: "Mon-Fri 8-18".
    #[serde(default)]
    pub hours: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkInfo {
    /// "Instagram"
    pub label: String,
    pub url: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OfferInfo {
    pub title: String,
    #[serde(default)]
    pub text: String,
}

/// Longest back-field text; Wallet shows more, but nobody reads it on a phone.
const MAX_TEXT: usize = 2000;

impl CardInfo {
    pub fn is_empty(&self) -> bool {
        *self == CardInfo::default()
    }

    /// The back fields this information becomes, with keys `info_…` (unique across the pass).
    pub fn back_fields(&self) -> Vec<FieldSpec> {
        let field = |key: String, label: &str, value: String| FieldSpec {
            key,
            label: Some(label.to_string()),
            value,
            ..FieldSpec::default()
        };
        let mut out = Vec::new();
        for (i, o) in self.offers.iter().enumerate() {
            out.push(field(format!("info_offer_{i}"), &o.title, o.text.clone()));
        }
        for (i, s) in self.stores.iter().enumerate() {
            let value = [s.address.trim(), s.hours.trim()]
                .into_iter()
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            out.push(field(format!("info_store_{i}"), &s.name, value));
        }
        if let Some(w) = &self.website {
            out.push(field("info_website".into(), "Website", w.clone()));
        }
        for (i, l) in self.social.iter().enumerate() {
            out.push(field(format!("info_social_{i}"), &l.label, l.url.clone()));
        }
        if let Some(e) = &self.support_email {
            out.push(field(
                "info_support_email".into(),
                "Support e-mail",
                format!("mailto:{e}"),
            ));
        }
        if let Some(p) = &self.support_phone {
            out.push(field(
                "info_support_phone".into(),
                "Support phone",
                format!("tel:{}", p.replace(' ', "")),
            ));
        }
        if let Some(t) = &self.terms {
            out.push(field(
                "info_terms".into(),
                "Terms and conditions",
                t.clone(),
            ));
        }
        out
    }

    pub(super) fn check(&self, c: &mut Checker) {
        for (i, s) in self.stores.iter().enumerate() {
            c.check(!s.name.trim().is_empty(), "info.stores", || {
                format!("store {} needs a name", i + 1)
            });
            c.check(
                s.address.chars().count() + s.hours.chars().count() <= MAX_TEXT,
                "info.stores",
                || {
                    format!(
                        "store {} address and hours must be at most {MAX_TEXT} characters",
                        i + 1
                    )
                },
            );
        }
        if let Some(w) = &self.website {
            c.check(is_web_url(w), "info.website", || {
                format!("the website must be an https:// or http:// address, got {w:?}")
            });
        }
        for (i, l) in self.social.iter().enumerate() {
            c.check(
                !l.label.trim().is_empty() && is_web_url(&l.url),
                "info.social",
                || format!("social link {} needs a name and an https:// address", i + 1),
            );
        }
        if let Some(e) = &self.support_email {
            let ok = e.split_once('@').is_some_and(|(a, b)| {
                !a.is_empty() && b.contains('.') && !e.contains(char::is_whitespace)
            });
            c.check(ok, "info.support_email", || {
                format!("the support e-mail must look like help@example.com, got {e:?}")
            });
        }
        if let Some(p) = &self.support_phone {
            let ok = p.chars().filter(|c| c.is_ascii_digit()).count() >= 3
                && p.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c));
            c.check(ok, "info.support_phone", || {
                format!("the support phone may hold only digits, spaces and + - ( ), got {p:?}")
            });
        }
        for (i, o) in self.offers.iter().enumerate() {
            c.check(!o.title.trim().is_empty(), "info.offers", || {
                format!("offer {} needs a title", i + 1)
            });
            c.check(o.text.chars().count() <= MAX_TEXT, "info.offers", || {
                format!("offer {} must be at most {MAX_TEXT} characters", i + 1)
            });
        }
        if let Some(t) = &self.terms {
            c.check(t.chars().count() <= 10_000, "info.terms", || {
                "terms must be at most 10000 characters".into()
            });
        }
    }
}

fn is_web_url(s: &str) -> bool {
    let s = s.trim();
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() > 10
        && !s.contains(char::is_whitespace)
}
