//! Checks before publishing: every rule `validate` enforces (errors, which block publishing),
//! plus what the wallets accept but show badly (warnings): low contrast, text that will be cut
//! off, labels longer than Google shows. The designer shows each next to the input it concerns.
//!
//! Truncation budgets are character counts measured on a 320 pt wide storeCard in Wallet's
//! fonts (iOS 17) and Google Wallet's card; proportional fonts make them approximate, so they
//! warn rather than refuse.

use super::{Substitutions, TemplateDesign};
use crate::domain::color::Rgb;
use crate::domain::template::{FieldValue, Standing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Breaks a wallet's rule: publishing is refused.
    Error,
    /// Shows badly: publishing is allowed.
    Warning,
}

/// One finding, named by the input it concerns (`secondary_fields`, `colors.foreground`, …).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub field: String,
    pub message: String,
    pub severity: Severity,
}

/// Which images the version to publish carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImagesPresent {
    pub icon: bool,
    pub logo: bool,
    pub strip: bool,
}

/// Foreground and label contrast below these (WCAG 2 AA for text, and for large text) warn.
const MIN_TEXT_CONTRAST: f64 = 4.5;
const MIN_LABEL_CONTRAST: f64 = 3.0;
/// Text or labels below this contrast (WCAG's floor for large text) cannot be read: an error
/// that blocks publishing.
const MIN_READABLE_CONTRAST: f64 = 3.0;
/// Characters that fit, per area, before Wallet cuts the text with an ellipsis.
const LOGO_TEXT_BUDGET: usize = 20;
const LOGO_TEXT_BUDGET_WITH_LOGO: usize = 12;
const HEADER_BUDGET: usize = 12;
const PRIMARY_BUDGET: usize = 12;
const ROW_BUDGET: usize = 28;
/// Google's limits: the points label (`loyaltyPoints.label`) and a text module's header.
const GOOGLE_POINTS_LABEL: usize = 9;
const GOOGLE_MODULE_HEADER: usize = 35;

/// The sample member the preview, the checks and the sample pass show: long enough a name
/// and a balance big enough to reveal truncation.
pub fn sample_substitutions<'a>(program_name: &'a str, now_ms: i64) -> Substitutions<'a> {
    Substitutions {
        balance: 12_480,
        tier: "Gold",
        member_name: "Alexandra Whitfield",
        external_id: "CRM-0004217",
        barcode: "T7K2Q9XW4M8R3P6V1N5B0C2D",
        program_name,
        standing: Standing {
            next_tier: "Platinum",
            points_to_next_tier: 2_520,
            next_expiry: Some((now_ms + 30 * 86_400_000, 340)),
            held: 480,
        },
    }
}

/// Every finding for `design` as it would be published with `images`.
pub fn pre_publish(design: &TemplateDesign, images: ImagesPresent, now_ms: i64) -> Vec<Finding> {
    let mut out: Vec<Finding> = match design.clone().validate() {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .into_iter()
            .map(|p| Finding {
                field: p.field,
                message: p.message,
                severity: Severity::Error,
            })
            .collect(),
    };
    if !images.icon {
        out.push(Finding {
            field: "images.icon".into(),
            message: "an icon is required: Apple Wallet does not open a pass without icon.png"
                .into(),
            severity: Severity::Error,
        });
    }
    let colors = &design.colors;
    if let (Some(bg), Some(fg), Some(label)) = (
        Rgb::parse(&colors.background),
        Rgb::parse(&colors.foreground),
        Rgb::parse(&colors.label),
    ) {
        for (field, what, contrast, enough) in [
            (
                "colors.foreground",
                "text",
                fg.contrast(bg),
                MIN_TEXT_CONTRAST,
            ),
            (
                "colors.label",
                "labels",
                label.contrast(bg),
                MIN_LABEL_CONTRAST,
            ),
        ] {
            if contrast < enough {
                let severity = if contrast < MIN_READABLE_CONTRAST {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                out.push(Finding {
                    field: field.into(),
                    message: format!(
                        "{what} on the background has a contrast of {contrast:.1}:1; at least {enough}:1 keeps it readable{}",
                        if severity == Severity::Error {
                            format!(", and below {MIN_READABLE_CONTRAST}:1 the card cannot be published")
                        } else {
                            String::new()
                        }
                    ),
                    severity,
                });
            }
        }
    }
    let mut warn = |field: &str, message: String| {
        out.push(Finding {
            field: field.to_string(),
            message,
            severity: Severity::Warning,
        })
    };
    let subs = sample_substitutions("Program", now_ms);
    let shown = |v: &str| match subs.fill(v) {
        FieldValue::Number(n) => crate::domain::grouped(n),
        FieldValue::Text(t) => t,
    };
    if let Some(t) = &design.logo_text {
        let budget = if images.logo {
            LOGO_TEXT_BUDGET_WITH_LOGO
        } else {
            LOGO_TEXT_BUDGET
        };
        if t.chars().count() > budget {
            warn(
                "logo_text",
                format!(
                    "the logo text will be cut after about {budget} characters{}",
                    if images.logo { " beside a logo" } else { "" }
                ),
            );
        }
    }
    let width = |f: &super::FieldSpec| {
        shown(&f.value)
            .chars()
            .count()
            .max(f.label.as_deref().map_or(0, |l| l.chars().count()))
    };
    let header: usize = design.header_fields.iter().map(width).sum();
    if header > HEADER_BUDGET {
        warn(
            "header_fields",
            format!(
                "header fields need {header} characters; about {HEADER_BUDGET} fit beside the logo, the rest is cut"
            ),
        );
    }
    for f in &design.primary_fields {
        let n = shown(&f.value).chars().count();
        if n > PRIMARY_BUDGET {
            warn(
                "primary_fields",
                format!(
                    "the primary field {:?} shows {n} characters for the sample member; about {PRIMARY_BUDGET} fit in its large type",
                    f.key
                ),
            );
        }
    }
    for (area, fields) in [
        ("secondary_fields", &design.secondary_fields),
        ("auxiliary_fields", &design.auxiliary_fields),
    ] {
        if fields.is_empty() {
            continue;
        }
        let per = ROW_BUDGET / fields.len();
        for f in fields.iter().filter(|f| width(f) > per) {
            warn(
                area,
                format!(
                    "field {:?} needs {} characters for the sample member; about {per} fit with {} fields in the row",
                    f.key,
                    width(f),
                    fields.len()
                ),
            );
        }
    }
    let balance = design
        .all_fields()
        .find(|(a, f)| *a != "back_fields" && f.value.trim() == "{{balance}}");
    match balance {
        None => warn(
            "primary_fields",
            "no field on the front shows {{balance}}: holders will not see their points".into(),
        ),
        Some((_, f)) => {
            let label = f.label.as_deref().unwrap_or("");
            if label.chars().count() > GOOGLE_POINTS_LABEL {
                warn(
                    area_of(design, &f.key),
                    format!(
                        "Google Wallet shows at most {GOOGLE_POINTS_LABEL} characters of the points label {label:?}"
                    ),
                );
            }
        }
    }
    for f in design.back_fields_all() {
        let label = f.label.as_deref().unwrap_or("");
        if label.chars().count() > GOOGLE_MODULE_HEADER {
            let field = if f.key.starts_with("info_") {
                "info"
            } else {
                "back_fields"
            };
            warn(
                field,
                format!(
                    "Google Wallet cuts the heading {label:?} after {GOOGLE_MODULE_HEADER} characters"
                ),
            );
        }
    }
    out
}

fn area_of(design: &TemplateDesign, key: &str) -> &'static str {
    design
        .all_fields()
        .find(|(_, f)| f.key == key)
        .map_or("primary_fields", |(a, _)| a)
}

/// Only the errors, for refusing a publish.
pub fn errors(findings: &[Finding]) -> impl Iterator<Item = &Finding> {
    findings.iter().filter(|f| f.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldSpec;

    const ALL: ImagesPresent = ImagesPresent {
        icon: true,
        logo: false,
        strip: true,
    };

    fn field(key: &str, label: &str, value: &str) -> FieldSpec {
        FieldSpec {
            key: key.into(),
            label: Some(label.into()),
            value: value.into(),
            ..FieldSpec::default()
        }
    }

    fn fields_named(findings: &[Finding], severity: Severity) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.severity == severity)
            .map(|f| f.field.clone())
            .collect()
    }

    #[test]
    fn the_demo_design_passes_clean() {
        let f = pre_publish(&crate::demo::design(), ALL, 0);
        assert_eq!(f, [], "{f:?}");
    }

    #[test]
    fn a_missing_icon_is_an_error() {
        let f = pre_publish(&crate::demo::design(), ImagesPresent::default(), 0);
        assert_eq!(fields_named(&f, Severity::Error), ["images.icon"]);
    }

    #[test]
    fn every_validation_rule_is_an_error_at_its_input() {
        let mut d = crate::demo::design();
        d.secondary_fields = (0..4).map(|i| field(&format!("s{i}"), "L", "x")).collect();
        d.colors.label = "purple".into();
        d.locations = (0..11).map(|_| d.locations[0].clone()).collect();
        d.translations.insert("Deutsch".into(), Default::default());
        let f = pre_publish(&d, ALL, 0);
        let errors = fields_named(&f, Severity::Error);
        for want in [
            "secondary_fields",
            "colors.label",
            "locations",
            "translations",
        ] {
            assert!(errors.iter().any(|e| e == want), "{want} missing in {f:?}");
        }
        let msg = &f
            .iter()
            .find(|x| x.field == "secondary_fields")
            .unwrap()
            .message;
        assert_eq!(
            msg,
            "a storeCard may have at most 4 secondary+auxiliary fields, got 5"
        );
    }

    #[test]
    fn unreadable_contrast_blocks_publishing_and_low_contrast_warns() {
        let mut d = crate::demo::design();
        d.colors.foreground = "#4a4f5a".into();
        d.colors.label = "#505560".into();
        let f = pre_publish(&d, ALL, 0);
        assert_eq!(
            fields_named(&f, Severity::Error),
            ["colors.foreground", "colors.label"],
            "below 3:1"
        );
        assert!(
            f[0].message.contains("cannot be published"),
            "{}",
            f[0].message
        );
        assert_eq!(errors(&f).count(), 2);

        // Readable but below WCAG AA for text: a warning only.
        d.colors.background = "#3c414c".into();
        d.colors.foreground = "#a0a4ab".into();
        d.colors.label = "#c8c8c8".into();
        let f = pre_publish(&d, ALL, 0);
        assert_eq!(fields_named(&f, Severity::Warning), ["colors.foreground"]);
        assert_eq!(fields_named(&f, Severity::Error), Vec::<String>::new());
        // The same colour as the background (1.0:1): an error.
        d.colors.foreground = d.colors.background.clone();
        let f = pre_publish(&d, ALL, 0);
        assert_eq!(fields_named(&f, Severity::Error), ["colors.foreground"]);
    }

    #[test]
    fn text_that_will_be_cut_warns() {
        let mut d = crate::demo::design();
        d.logo_text = Some("The Very Long Name Coffee Roasters".into());
        d.header_fields = vec![field("h", "MEMBER SINCE", "{{member_name}}")];
        d.primary_fields = vec![field("points", "POINTS", "{{balance}} points in all")];
        d.secondary_fields = vec![
            field("a", "A", "{{member_name}}"),
            field("b", "B", "x"),
            field("c", "C", "x"),
        ];
        d.back_fields
            .push(field("long", &"Heading ".repeat(6), "body"));
        let f = pre_publish(&d, ALL, 0);
        let warnings = fields_named(&f, Severity::Warning);
        for want in [
            "logo_text",
            "header_fields",
            "primary_fields",
            "secondary_fields",
            "back_fields",
        ] {
            assert!(
                warnings.iter().any(|w| w == want),
                "{want} missing in {f:?}"
            );
        }
    }

    #[test]
    fn a_card_without_its_balance_and_a_long_points_label_warn() {
        let mut d = crate::demo::design();
        d.primary_fields = vec![field("p", "WELCOME", "Hello")];
        let f = pre_publish(&d, ALL, 0);
        assert!(
            f.iter()
                .any(|x| x.message.contains("no field on the front shows"))
        );
        let mut d = crate::demo::design();
        d.primary_fields[0].label = Some("LOYALTY POINTS".into());
        let f = pre_publish(&d, ALL, 0);
        assert!(
            f.iter()
                .any(|x| x.field == "primary_fields" && x.message.contains("at most 9")),
            "{f:?}"
        );
    }

    #[test]
    fn digits_are_grouped_like_wallet() {
        assert_eq!(crate::domain::grouped(12480), "12,480");
        assert_eq!(crate::domain::grouped(100), "100");
        assert_eq!(crate::domain::grouped(1_000_000), "1,000,000");
    }
}
