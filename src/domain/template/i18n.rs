//! Translations of a design's texts, and Apple's `xx.lproj/pass.strings` made from them
//! (`shared/spec/apple-wallet.md` §3).
//!
//! A design is written in English; `translations[lang][english text] = translated text`. Apple
//! looks every label and value of `pass.json` up in the device language's `pass.strings`, so a
//! translation is keyed by the very text the pass shows. Google takes the same pairs as
//! `LocalizedString.translatedValues`.

use std::collections::BTreeMap;

use super::TemplateDesign;
use crate::domain::Checker;

/// Most languages a design may carry.
pub const MAX_LANGUAGES: usize = 20;

/// `en`, `de`, `pt-BR`, `zh-Hans`: a BCP 47 tag of the simple shapes both wallets accept.
pub fn is_language_tag(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let first = parts.next().unwrap_or("");
    (2..=3).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

pub(super) fn check(c: &mut Checker, translations: &BTreeMap<String, BTreeMap<String, String>>) {
    c.check(translations.len() <= MAX_LANGUAGES, "translations", || {
        format!("a design may have at most {MAX_LANGUAGES} languages")
    });
    for (lang, texts) in translations {
        c.check(is_language_tag(lang), "translations", || {
            format!("{lang:?} is not a language tag such as de, fr or pt-BR")
        });
        c.check(lang != "en", "translations", || {
            "the design itself is English; add translations for other languages".into()
        });
        for (from, to) in texts {
            c.check(to.chars().count() <= 2000, "translations", || {
                format!("the {lang} translation of {from:?} must be at most 2000 characters")
            });
        }
    }
}

impl TemplateDesign {
    /// The English texts a marketer can translate, in the order the card shows them. Values
    /// with placeholders differ per member, so only their labels are listed.
    pub fn translatable_texts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |s: &str| {
            let s = s.trim();
            if !s.is_empty() && !s.contains("{{") && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        };
        add(&self.description);
        if let Some(t) = &self.logo_text {
            add(t);
        }
        let back = self.back_fields_all();
        let front = self.all_fields().filter(|(a, _)| *a != "back_fields");
        for f in front.map(|(_, f)| f).chain(back.iter()) {
            if let Some(l) = &f.label {
                add(l);
            }
            if !f.value.starts_with("https://")
                && !f.value.starts_with("mailto:")
                && !f.value.starts_with("tel:")
            {
                add(&f.value);
            }
            if let Some(m) = &f.change_message {
                add(m);
            }
        }
        for l in &self.locations {
            if let Some(t) = &l.relevant_text {
                add(t);
            }
        }
        out
    }

    /// The translations of `text` that are set, as `(language, translation)`.
    pub fn translations_of<'a>(&'a self, text: &str) -> Vec<(&'a str, &'a str)> {
        self.translations
            .iter()
            .filter_map(|(lang, texts)| {
                texts
                    .get(text.trim())
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| (lang.as_str(), t.as_str()))
            })
            .collect()
    }

    /// `(path, bytes)` of one `xx.lproj/pass.strings` per language with any translation of a
    /// text the design still shows. UTF-16LE with a byte-order mark, the encoding every Wallet
    /// version reads (§3).
    pub fn pass_strings(&self) -> Vec<(String, Vec<u8>)> {
        let texts = self.translatable_texts();
        self.translations
            .iter()
            .filter_map(|(lang, map)| {
                let lines: String = texts
                    .iter()
                    .filter_map(|t| map.get(t).filter(|v| !v.trim().is_empty()).map(|v| (t, v)))
                    .map(|(k, v)| format!("\"{}\" = \"{}\";\n", escape(k), escape(v)))
                    .collect();
                (!lines.is_empty()).then(|| {
                    let mut bytes = vec![0xFF, 0xFE];
                    bytes.extend(lines.encode_utf16().flat_map(u16::to_le_bytes));
                    (format!("{lang}.lproj/pass.strings"), bytes)
                })
            })
            .collect()
    }
}

/// Escapes a string for a `.strings` literal: quotes, backslashes and line breaks.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\r', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_tags() {
        for ok in ["de", "fr", "pt-BR", "zh-Hans", "ast"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "D", "DE", "german", "de_DE", "de-", "de-x"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }

    #[test]
    fn strings_are_utf16_with_escapes_and_only_for_shown_texts() {
        let mut d = crate::demo::design();
        let de = d.translations.entry("de".into()).or_default();
        de.insert("POINTS".into(), "PUNKTE".into());
        de.insert("MEMBER".into(), "MITGLIED \"A\"".into());
        de.insert("gone".into(), "weg".into());
        let files = d.pass_strings();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "de.lproj/pass.strings");
        let bytes = &files[0].1;
        assert_eq!(&bytes[..2], &[0xFF, 0xFE]);
        let units: Vec<u16> = bytes[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let text = String::from_utf16(&units).unwrap();
        assert!(text.contains("\"POINTS\" = \"PUNKTE\";\n"), "{text}");
        assert!(
            text.contains("\"MEMBER\" = \"MITGLIED \\\"A\\\"\";\n"),
            "{text}"
        );
        assert!(
            !text.contains("weg"),
            "a text the card no longer shows is left out"
        );
    }
}
