//! Joining a program: which details the join form asks for, the consent texts and policy a
//! customer agrees to, and the checks on what they type. Consent is recorded exactly as shown
//! (GDPR Art. 7(1) and Russia's 152-FZ Art. 9 both put the burden of proof on us).

use serde::{Deserialize, Serialize};

use super::{Checker, Invalid};

/// Whether the join form asks for a detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Ask {
    Required,
    #[default]
    Optional,
    Absent,
}

impl Ask {
    pub fn name(self) -> &'static str {
        match self {
            Ask::Required => "required",
            Ask::Optional => "optional",
            Ask::Absent => "absent",
        }
    }
}

/// A program's join page settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentSettings {
    pub name: Ask,
    pub phone: Ask,
    pub email: Ask,
    pub birthday: Ask,
    /// The privacy policy both consent boxes link to; the join page is closed without one.
    #[schema(max_length = 2000)]
    pub privacy_policy_url: Option<String>,
    /// Recorded with every consent: which text of the policy was agreed to.
    #[schema(max_length = 50)]
    pub policy_version: String,
    /// The label of the required box.
    #[schema(max_length = 1000)]
    pub data_consent_text: String,
    /// The label of the optional marketing box; `None` shows no such box.
    #[schema(max_length = 1000)]
    pub marketing_consent_text: Option<String>,
    /// Points credited once to each new member.
    pub welcome_bonus: i64,
}

impl Default for EnrollmentSettings {
    fn default() -> Self {
        EnrollmentSettings {
            name: Ask::Required,
            phone: Ask::Optional,
            email: Ask::Required,
            birthday: Ask::Absent,
            privacy_policy_url: None,
            policy_version: "1".into(),
            data_consent_text:
                "I agree to the processing of my personal data for the loyalty programme as described in the privacy policy."
                    .into(),
            marketing_consent_text: Some(
                "I would like to receive offers and news by e-mail and on my card.".into(),
            ),
            welcome_bonus: 0,
        }
    }
}

impl EnrollmentSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut c = Checker::default();
        c.check(
            self.email != Ask::Absent || self.phone != Ask::Absent,
            "email",
            || "the join form must ask for an e-mail address or a phone number, so a returning customer is found again".into(),
        );
        if let Some(url) = &self.privacy_policy_url {
            c.check(
                url.starts_with("https://") || url.starts_with("http://"),
                "privacy_policy_url",
                || format!("privacy_policy_url must be an https:// address, got {url:?}"),
            );
            super::check_text(&mut c, "privacy_policy_url", url, 2000);
        }
        super::check_text(&mut c, "policy_version", &self.policy_version, 50);
        super::check_text(&mut c, "data_consent_text", &self.data_consent_text, 1000);
        if let Some(t) = &self.marketing_consent_text {
            super::check_text(&mut c, "marketing_consent_text", t, 1000);
        }
        c.check(
            (0..=crate::ledger::MAX_AMOUNT).contains(&self.welcome_bonus),
            "welcome_bonus",
            || {
                format!(
                    "welcome_bonus must be between 0 and {}",
                    crate::ledger::MAX_AMOUNT
                )
            },
        );
        c.finish()
    }
}

/// What a customer typed on the join form, as submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinInput {
    pub name: String,
    pub phone: String,
    pub email: String,
    pub birthday: String,
    pub data_consent: bool,
    pub marketing_consent: bool,
}

/// A checked join: details normalised for matching (lower-case e-mail, digits-only phone with
/// its leading `+`), the consents as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    /// `YYYY-MM-DD`
    pub birthday: Option<String>,
    pub marketing_consent: bool,
}

/// Normalises a phone number: `+31 (20) 123-4567` → `+31201234567`; `None` if it is not one.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let plus = raw.starts_with('+');
    if !raw
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        return None;
    }
    let digits: String = raw.chars().filter(|c| c.is_ascii_digit()).collect();
    (7..=15)
        .contains(&digits.len())
        .then(|| if plus { format!("+{digits}") } else { digits })
}

/// Lower-cases and checks an e-mail address (one `@`, a dot in the domain, no spaces).
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    (!local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !e.contains(char::is_whitespace)
        && !domain.contains('@')
        && e.len() <= 254)
        .then_some(e)
}

impl JoinInput {
    /// Checks the input against the program's settings; every problem is named by its input.
    pub fn check(&self, s: &EnrollmentSettings, today: time::Date) -> Result<Join, Invalid> {
        let mut c = Checker::default();
        let present = |v: &str| !v.trim().is_empty();
        for (field, ask, value, what) in [
            ("name", s.name, &self.name, "your name"),
            ("phone", s.phone, &self.phone, "your phone number"),
            ("email", s.email, &self.email, "your e-mail address"),
            ("birthday", s.birthday, &self.birthday, "your birthday"),
        ] {
            if ask == Ask::Required && !present(value) {
                c.fail(field, format!("please enter {what}"));
            }
        }
        let name = self.name.trim();
        if name.chars().count() > 200 {
            c.fail("name", "a name may have at most 200 characters");
        }
        let phone = match (s.phone, present(&self.phone)) {
            (Ask::Absent, _) | (_, false) => None,
            _ => {
                let p = normalize_phone(&self.phone);
                if p.is_none() {
                    c.fail(
                        "phone",
                        "please enter a phone number of 7 to 15 digits, such as +31 20 123 4567",
                    );
                }
                p
            }
        };
        let email = match (s.email, present(&self.email)) {
            (Ask::Absent, _) | (_, false) => None,
            _ => {
                let e = normalize_email(&self.email);
                if e.is_none() {
                    c.fail(
                        "email",
                        "please enter an e-mail address such as name@example.com",
                    );
                }
                e
            }
        };
        let birthday = match (s.birthday, present(&self.birthday)) {
            (Ask::Absent, _) | (_, false) => None,
            _ => {
                let format = time::macros::format_description!("[year]-[month]-[day]");
                match time::Date::parse(self.birthday.trim(), &format) {
                    Ok(d) if d < today && d.year() >= 1900 => {
                        Some(self.birthday.trim().to_string())
                    }
                    _ => {
                        c.fail(
                            "birthday",
                            "please enter your birthday as a date in the past (YYYY-MM-DD)",
                        );
                        None
                    }
                }
            }
        };
        if phone.is_none() && email.is_none() && !c.has_problems() {
            c.fail(
                if s.email != Ask::Absent {
                    "email"
                } else {
                    "phone"
                },
                "please enter an e-mail address or a phone number, so we can find your card again",
            );
        }
        if !self.data_consent {
            c.fail("data_consent", "please agree to the processing of your data to join; it is what the card needs to work");
        }
        c.finish()?;
        Ok(Join {
            name: if name.is_empty() {
                "Member".into()
            } else {
                name.to_string()
            },
            phone,
            email,
            birthday,
            marketing_consent: self.marketing_consent && s.marketing_consent_text.is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> time::Date {
        time::macros::date!(2026 - 12 - 02)
    }

    fn input() -> JoinInput {
        JoinInput {
            name: " Ada Lovelace ".into(),
            phone: "+31 (20) 123-4567".into(),
            email: " Ada@Example.COM ".into(),
            birthday: String::new(),
            data_consent: true,
            marketing_consent: false,
        }
    }

    #[test]
    fn a_join_is_normalised_for_matching() {
        let j = input()
            .check(&EnrollmentSettings::default(), today())
            .unwrap();
        assert_eq!(j.name, "Ada Lovelace");
        assert_eq!(j.email.as_deref(), Some("ada@example.com"));
        assert_eq!(j.phone.as_deref(), Some("+31201234567"));
        assert!(!j.marketing_consent);
    }

    #[test]
    fn every_problem_is_named_by_its_input() {
        let s = EnrollmentSettings {
            birthday: Ask::Required,
            ..EnrollmentSettings::default()
        };
        let bad = JoinInput {
            name: String::new(),
            phone: "call me".into(),
            email: "ada@".into(),
            birthday: "2030-01-01".into(),
            data_consent: false,
            marketing_consent: true,
        };
        let e = bad.check(&s, today()).unwrap_err();
        let fields: Vec<_> = e.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["name", "phone", "email", "birthday", "data_consent"]
        );
    }

    #[test]
    fn marketing_consent_needs_its_box_and_a_tick() {
        let mut i = input();
        i.marketing_consent = true;
        assert!(
            i.check(&EnrollmentSettings::default(), today())
                .unwrap()
                .marketing_consent
        );
        let no_box = EnrollmentSettings {
            marketing_consent_text: None,
            ..EnrollmentSettings::default()
        };
        assert!(!i.check(&no_box, today()).unwrap().marketing_consent);
    }

    #[test]
    fn an_absent_detail_is_ignored_and_one_contact_is_needed() {
        let s = EnrollmentSettings {
            phone: Ask::Absent,
            email: Ask::Optional,
            ..EnrollmentSettings::default()
        };
        let mut i = input();
        i.email.clear();
        let e = i.check(&s, today()).unwrap_err();
        assert_eq!(e.problems[0].field, "email");
        assert!(
            EnrollmentSettings {
                phone: Ask::Absent,
                email: Ask::Absent,
                ..s
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn phones_and_emails() {
        assert_eq!(
            normalize_phone("020 123 4567").as_deref(),
            Some("0201234567")
        );
        assert_eq!(normalize_phone("12345"), None);
        assert_eq!(normalize_phone("+1 555 CALL"), None);
        assert_eq!(normalize_email("a@b.co").as_deref(), Some("a@b.co"));
        for bad in ["a@b", "@b.co", "a b@c.de", "a@b@c.de", "a@.b"] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }
}
