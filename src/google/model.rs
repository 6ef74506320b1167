//! Our template and member as Google's LoyaltyClass and LoyaltyObject (`google-wallet.md`
//! §3.3-3.4), with Google's length limits applied.

use serde_json::{Value, json};

use crate::domain::color::Rgb;
use crate::domain::template::{FieldValue, Substitutions};
use crate::domain::{BarcodeFormat, FieldSpec, Member, Program, Template, TemplateDesign};

pub use crate::domain::CardState;

/// Cuts `s` to `max` characters, with an ellipsis when it was longer.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The template's uploads Google's class can show.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassImages {
    /// A hero image (from the strip upload).
    pub hero: bool,
    /// The wide logo's file name under `/google/images/…/`, when a logo was uploaded.
    pub wide_logo: Option<&'static str>,
}

/// The class for a template version: everything every holder shares.
pub fn loyalty_class(
    class_id: &str,
    program: &Program,
    template: &Template,
    public_base: &str,
    hero: bool,
) -> Value {
    let images = ClassImages {
        hero,
        wide_logo: None,
    };
    loyalty_class_with(class_id, program, template, public_base, images)
}

/// [`loyalty_class`] with every upload the class can show.
pub fn loyalty_class_with(
    class_id: &str,
    program: &Program,
    template: &Template,
    public_base: &str,
    images: ClassImages,
) -> Value {
    let design = &template.design;
    let labels = Labels::of(design);
    let logo = format!(
        "{public_base}/google/images/{}/{}/logo.png",
        template.id, template.version
    );
    let locations: Vec<Value> = design
        .locations
        .iter()
        .take(10)
        .map(|l| json!({"latitude": l.latitude, "longitude": l.longitude}))
        .collect();
    let back = design.back_fields_all();
    // Names go whole: Google documents 20 characters as what small screens show, and its app
    // adds the ellipsis itself; cutting here would lose the rest on larger screens too.
    let mut class = json!({
        "id": class_id,
        "issuerName": program.organization_name,
        "localizedIssuerName": localized_always(design, &program.organization_name),
        "programName": program.name,
        "localizedProgramName": localized_always(design, &program.name),
        "programLogo": {
            "sourceUri": {"uri": logo},
            "contentDescription": {"defaultValue": {"language": "en", "value": cut(&program.name, 100)}},
        },
        "reviewStatus": "UNDER_REVIEW",
        "accountNameLabel": cut(&labels.account_name, 15),
        "accountIdLabel": cut(&labels.account_id, 15),
        "merchantLocations": locations,
        "textModulesData": text_modules(design, back.iter().filter(|f| is_static(f) && link(f).is_none()), |v| v.to_string()),
        "linksModuleData": {"uris": back.iter().filter_map(|f| {
            link(f).map(|uri| json!({"uri": uri, "description": cut(f.label.as_deref().unwrap_or(&f.key), 100), "id": module_id(&f.key)}))
        }).collect::<Vec<_>>()},
        "callbackOptions": {"url": format!("{public_base}/google/callback")},
        "multipleDevicesAndHoldersAllowedStatus": "ONE_USER_ALL_DEVICES",
    });
    // Google documents `#rrggbb`; designs keep Apple's `rgb(r, g, b)`.
    if let Some(rgb) = Rgb::parse(&design.colors.background) {
        class["hexBackgroundColor"] = json!(rgb.hex());
    }
    for (key, text, max) in [
        ("localizedAccountNameLabel", &labels.account_name, 15),
        ("localizedAccountIdLabel", &labels.account_id, 15),
    ] {
        if let Some(l) = localized(design, text, max) {
            class[key] = l;
        }
    }
    if let Some(wide) = images.wide_logo {
        class["wideProgramLogo"] = json!({
            "sourceUri": {"uri": format!("{public_base}/google/images/{}/{}/{wide}", template.id, template.version)},
            "contentDescription": {"defaultValue": {"language": "en", "value": cut(&program.name, 100)}},
        });
    }
    if images.hero {
        class["heroImage"] = json!({
            "sourceUri": {"uri": format!("{public_base}/google/images/{}/{}/hero.png", template.id, template.version)},
            "contentDescription": {"defaultValue": {"language": "en", "value": cut(&program.name, 100)}},
        });
    }
    class
}

/// The labels Google shows next to the member's name, number and tier: the design's own
/// labels for those fields (which its translations cover), else English defaults.
struct Labels {
    account_name: String,
    account_id: String,
    tier: String,
}

impl Labels {
    fn of(design: &TemplateDesign) -> Labels {
        let label_of = |placeholders: &[&str], default: &str| {
            design
                .all_fields()
                .map(|(_, f)| f)
                .find(|f| placeholders.contains(&f.value.trim()))
                .and_then(|f| f.label.clone())
                .filter(|l| !l.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Labels {
            account_name: label_of(&["{{member_name}}"], "Member"),
            account_id: label_of(&["{{external_id}}", "{{barcode}}"], "Number"),
            tier: label_of(&["{{tier}}"], "Tier"),
        }
    }
}

/// Google's `LocalizedString` for `text` with whatever translations the design has.
fn localized_always(design: &TemplateDesign, text: &str) -> Value {
    json!({
        "defaultValue": {"language": "en", "value": text},
        "translatedValues": design
            .translations_of(text)
            .into_iter()
            .map(|(language, value)| json!({"language": language, "value": value}))
            .collect::<Vec<_>>(),
    })
}

/// Google's `LocalizedString` for a text of the design, when the design translates it.
fn localized(design: &TemplateDesign, text: &str, max: usize) -> Option<Value> {
    let translated = design.translations_of(text);
    (!translated.is_empty()).then(|| {
        json!({
            "defaultValue": {"language": "en", "value": cut(text, max)},
            "translatedValues": translated
                .into_iter()
                .map(|(language, value)| json!({"language": language, "value": cut(value, max)}))
                .collect::<Vec<_>>(),
        })
    })
}

/// A back field whose value has no placeholder: the same on every card.
fn is_static(f: &FieldSpec) -> bool {
    !f.value.contains("{{")
}

/// A back field whose whole value is a link Google can open (web, phone, e-mail).
fn link(f: &FieldSpec) -> Option<&str> {
    let v = f.value.trim();
    (is_static(f)
        && !v.contains(char::is_whitespace)
        && ["https://", "http://", "tel:", "mailto:"]
            .iter()
            .any(|p| v.starts_with(p)))
    .then_some(v)
}

/// Text-module ids may not contain dots (they are used in template field paths).
fn module_id(key: &str) -> String {
    key.replace('.', "_")
}

/// Up to 10 text modules (what Google shows from one class or object), with their
/// translations.
fn text_modules<'a>(
    design: &TemplateDesign,
    fields: impl Iterator<Item = &'a FieldSpec>,
    value: impl Fn(&str) -> String,
) -> Vec<Value> {
    fields
        .take(10)
        .map(|f| {
            let header = f.label.as_deref().unwrap_or("");
            let mut module = json!({
                "id": module_id(&f.key),
                "header": cut(header, 35),
                "body": cut(&value(&f.value), 500),
            });
            if let Some(l) = localized(design, header, 35) {
                module["localizedHeader"] = l;
            }
            if let Some(l) = is_static(f)
                .then(|| localized(design, &f.value, 500))
                .flatten()
            {
                module["localizedBody"] = l;
            }
            module
        })
        .collect()
}

fn google_barcode(format: BarcodeFormat) -> &'static str {
    match format {
        BarcodeFormat::Qr => "QR_CODE",
        BarcodeFormat::Pdf417 => "PDF_417",
        BarcodeFormat::Aztec => "AZTEC",
        BarcodeFormat::Code128 => "CODE_128",
    }
}

fn text(v: FieldValue) -> String {
    match v {
        FieldValue::Number(n) => n.to_string(),
        FieldValue::Text(t) => t,
    }
}

/// The label of the design's `{{balance}}` field, or "Points".
fn points_label(template: &Template) -> String {
    let d = &template.design;
    d.header_fields
        .iter()
        .chain(&d.primary_fields)
        .chain(&d.secondary_fields)
        .chain(&d.auxiliary_fields)
        .find(|f: &&FieldSpec| f.value.trim() == "{{balance}}")
        .and_then(|f| f.label.clone())
        .unwrap_or_else(|| "Points".into())
}

/// One member's active card; see [`loyalty_object_in`].
pub fn loyalty_object(
    object_id: &str,
    class_id: &str,
    program: &Program,
    template: &Template,
    member: &Member,
) -> Value {
    loyalty_object_in(
        object_id,
        class_id,
        program,
        template,
        member,
        CardState::Active,
    )
}

/// One member's card in `state`, without the standing placeholders (tier progress, expiry);
/// see [`loyalty_object_with`].
pub fn loyalty_object_in(
    object_id: &str,
    class_id: &str,
    program: &Program,
    template: &Template,
    member: &Member,
    state: CardState,
) -> Value {
    loyalty_object_with(
        object_id,
        class_id,
        program,
        template,
        member,
        state,
        Default::default(),
    )
}

/// One member's card in `state`, with `standing` filling the tier-progress and expiry
/// placeholders. The balance is an `int`; the tier rides as secondary points; the back fields
/// become text modules (at most 10, ids without dots).
pub fn loyalty_object_with(
    object_id: &str,
    class_id: &str,
    program: &Program,
    template: &Template,
    member: &Member,
    state: CardState,
    standing: crate::domain::template::Standing<'_>,
) -> Value {
    let subs = Substitutions {
        balance: member.points,
        tier: program
            .rules
            .tier_name(member.tier.as_deref())
            .unwrap_or(""),
        member_name: &member.display_name,
        external_id: member.external_id.as_deref().unwrap_or(""),
        barcode: &member.barcode,
        program_name: &program.name,
        standing,
    };
    let design = &template.design;
    // Fields with placeholders differ per member, so they ride on the object; the rest are
    // on the class, shared by every card.
    let back = design.back_fields_all();
    let modules = text_modules(design, back.iter().filter(|f| !is_static(f)), |v| {
        text(subs.fill(v))
    });
    let alternate = match (&design.barcode.alt_text, design.barcode.show_value) {
        (_, false) => String::new(),
        (Some(t), true) => text(subs.fill(t)),
        (None, true) => member.barcode.clone(),
    };
    let label = points_label(template);
    let mut object = json!({
        "id": object_id,
        "classId": class_id,
        "state": state.google(),
        "accountId": cut(member.external_id.as_deref().unwrap_or(&member.barcode), 20),
        "accountName": cut(&member.display_name, 20),
        "loyaltyPoints": {"label": cut(&label, 9), "balance": {"int": member.points}},
        "barcode": {
            "type": google_barcode(design.barcode.format),
            "value": member.barcode,
            "alternateText": alternate,
        },
        "textModulesData": modules,
    });
    if let Some(l) = localized(design, &label, 9) {
        object["loyaltyPoints"]["localizedLabel"] = l;
    }
    if let Some(tier) = program.rules.tier_name(member.tier.as_deref()) {
        let tier_label = Labels::of(design).tier;
        object["secondaryLoyaltyPoints"] =
            json!({"label": cut(&tier_label, 9), "balance": {"string": cut(tier, 7)}});
        if let Some(l) = localized(design, &tier_label, 9) {
            object["secondaryLoyaltyPoints"]["localizedLabel"] = l;
        }
    }
    if member.display_name.trim().is_empty() {
        // An erased member has no name; Google takes 1 to 20 characters or none at all.
        if let Some(o) = object.as_object_mut() {
            o.remove("accountName");
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FieldSpec;

    fn program(name: &str, organization: &str) -> Program {
        Program {
            id: "p1".into(),
            slug: "coffee".into(),
            name: name.into(),
            pass_type_identifier: "pass.com.example.coffee".into(),
            team_identifier: "ABCDE12345".into(),
            organization_name: organization.into(),
            rules: Default::default(),
            created_at: 0,
        }
    }

    fn template() -> Template {
        let mut design = crate::demo::design();
        design.colors.background = "rgb(60, 65, 76)".into();
        let de = design.translations.entry("de".into()).or_default();
        de.insert("MEMBER".into(), "MITGLIED".into());
        de.insert(
            "Example Coffee Roasters of Old Street".into(),
            "Kaffeerösterei Old Street".into(),
        );
        Template {
            id: "t1".into(),
            program_id: "p1".into(),
            name: "Default".into(),
            version: 3,
            design,
            updated_at: 0,
        }
    }

    fn member() -> Member {
        Member {
            id: "m1".into(),
            program_id: "p1".into(),
            display_name: "Ada Lovelace".into(),
            external_id: Some("crm-1".into()),
            barcode: "ABC123".into(),
            points: 58,
            tier: None,
            created_at: 0,
        }
    }

    type Format = (&'static str, &'static str, fn(&str) -> bool);

    fn hex_colour(s: &str) -> bool {
        s.strip_prefix('#')
            .is_some_and(|h| matches!(h.len(), 3 | 6) && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }
    fn language(s: &str) -> bool {
        crate::domain::template::i18n::is_language_tag(s)
    }
    fn url(s: &str) -> bool {
        s.starts_with("https://") || s.starts_with("http://")
    }
    fn within(max: usize) -> impl Fn(&str) -> bool {
        move |s| (1..=max).contains(&s.chars().count())
    }
    fn one_of(s: &str, allowed: &[&str]) -> bool {
        allowed.contains(&s)
    }

    /// Google's documented formats for the fields we send (`google-wallet.md` §3.3-3.4): a
    /// JSON pointer, the rule, and its check.
    const CLASS_FORMATS: &[Format] = &[
        ("/hexBackgroundColor", "#rrggbb or #rgb", hex_colour),
        ("/reviewStatus", "DRAFT or UNDER_REVIEW", |s| {
            one_of(s, &["DRAFT", "UNDER_REVIEW"])
        }),
        ("/multipleDevicesAndHoldersAllowedStatus", "enum", |s| {
            one_of(
                s,
                &[
                    "MULTIPLE_HOLDERS",
                    "ONE_USER_ALL_DEVICES",
                    "ONE_USER_ONE_DEVICE",
                ],
            )
        }),
        ("/programLogo/sourceUri/uri", "URI with a scheme", url),
        ("/wideProgramLogo/sourceUri/uri", "URI with a scheme", url),
        ("/heroImage/sourceUri/uri", "URI with a scheme", url),
        ("/callbackOptions/url", "URI with a scheme", url),
        ("/accountNameLabel", "1-15 characters", |s| within(15)(s)),
        ("/accountIdLabel", "1-15 characters", |s| within(15)(s)),
        (
            "/localizedIssuerName/defaultValue/language",
            "BCP 47",
            language,
        ),
        (
            "/localizedProgramName/defaultValue/language",
            "BCP 47",
            language,
        ),
        (
            "/localizedProgramName/translatedValues/0/language",
            "BCP 47",
            language,
        ),
        (
            "/localizedAccountNameLabel/translatedValues/0/value",
            "1-15 characters",
            |s| within(15)(s),
        ),
    ];
    const OBJECT_FORMATS: &[Format] = &[
        ("/state", "enum", |s| {
            one_of(s, &["ACTIVE", "COMPLETED", "EXPIRED", "INACTIVE"])
        }),
        ("/accountId", "1-20 characters", |s| within(20)(s)),
        ("/accountName", "1-20 characters", |s| within(20)(s)),
        ("/loyaltyPoints/label", "1-9 characters", |s| within(9)(s)),
        ("/barcode/type", "enum", |s| {
            one_of(
                s,
                &[
                    "AZTEC",
                    "CODE_39",
                    "CODE_128",
                    "CODABAR",
                    "DATA_MATRIX",
                    "EAN_8",
                    "EAN_13",
                    "ITF_14",
                    "PDF_417",
                    "QR_CODE",
                    "UPC_A",
                    "TEXT_ONLY",
                ],
            )
        }),
    ];

    fn assert_formats(v: &Value, formats: &[Format]) {
        for (pointer, rule, ok) in formats {
            let got = v
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{pointer} is missing in {v:#}"));
            assert!(ok(got), "{pointer} = {got:?} is not {rule}");
        }
    }

    #[test]
    fn class_and_object_follow_googles_documented_formats() {
        let long = "Example Coffee Roasters of Old Street";
        let p = program(long, "Example Coffee Roasters Ltd");
        let t = template();
        let images = ClassImages {
            hero: true,
            wide_logo: Some("wide-logo.png"),
        };
        let class = loyalty_class_with("1.c", &p, &t, "https://cards.example", images);
        assert_formats(&class, CLASS_FORMATS);
        assert_eq!(class["hexBackgroundColor"], "#3c414c");
        // Google's app adds the ellipsis after 20 characters; we send the names whole.
        assert_eq!(class["programName"], long);
        assert_eq!(class["issuerName"], "Example Coffee Roasters Ltd");
        assert_eq!(class["localizedProgramName"]["defaultValue"]["value"], long);
        assert_eq!(
            class["localizedProgramName"]["translatedValues"][0],
            json!({"language": "de", "value": "Kaffeerösterei Old Street"})
        );
        assert_eq!(
            class["localizedIssuerName"]["translatedValues"],
            json!([]),
            "no translation: the default only"
        );
        // The design's own labels, translated as the design translates them.
        assert_eq!(class["accountNameLabel"], "MEMBER");
        assert_eq!(class["accountIdLabel"], "NUMBER");
        assert_eq!(
            class["localizedAccountNameLabel"]["translatedValues"][0]["value"],
            "MITGLIED"
        );
        assert_eq!(
            class["wideProgramLogo"]["sourceUri"]["uri"],
            "https://cards.example/google/images/t1/3/wide-logo.png"
        );
        let plain = loyalty_class("1.c", &p, &t, "https://cards.example", false);
        assert!(plain.get("wideProgramLogo").is_none() && plain.get("heroImage").is_none());

        let object = loyalty_object("1.o", "1.c", &p, &t, &member());
        assert_formats(&object, OBJECT_FORMATS);
        assert_eq!(object["state"], "ACTIVE");
        for (state, google) in [
            (CardState::Inactive, "INACTIVE"),
            (CardState::Expired, "EXPIRED"),
        ] {
            let o = loyalty_object_in("1.o", "1.c", &p, &t, &member(), state);
            assert_eq!(o["state"], google);
        }
        // An erased member's card names no one.
        let erased = Member {
            display_name: String::new(),
            ..member()
        };
        let o = loyalty_object_in("1.o", "1.c", &p, &t, &erased, CardState::Inactive);
        assert!(o.get("accountName").is_none(), "{o}");
    }

    fn field(key: &str, value: &str) -> FieldSpec {
        FieldSpec {
            key: key.into(),
            label: Some("Label".into()),
            value: value.into(),
            change_message: None,
            text_alignment: None,
            ..FieldSpec::default()
        }
    }

    #[test]
    fn back_fields_split_between_class_and_object() {
        assert!(super::is_static(&field("terms", "No cash value.")));
        assert!(!super::is_static(&field("card", "Card {{barcode}}")));
        assert_eq!(
            super::link(&field("web", " https://example.com/coffee ")),
            Some("https://example.com/coffee")
        );
        assert_eq!(
            super::link(&field("tel", "tel:+441234567")),
            Some("tel:+441234567")
        );
        assert_eq!(
            super::link(&field("text", "Visit https://example.com")),
            None
        );
        assert_eq!(super::module_id("store.hours"), "store_hours");
    }

    #[test]
    fn standing_placeholders_are_filled_on_the_object() {
        let mut t = template();
        t.design.back_fields = vec![
            field(
                "progress",
                "{{points_to_next_tier}} points to {{next_tier}}",
            ),
            field("expiry", "{{next_expiry_points}} points lapse"),
        ];
        let standing = crate::domain::template::Standing {
            next_tier: "Gold",
            points_to_next_tier: 40,
            next_expiry: Some((1_800_000_000_000, 12)),
            held: 0,
        };
        let object = loyalty_object_with(
            "1.o",
            "1.c",
            &program("Coffee", "Roasters"),
            &t,
            &member(),
            CardState::Active,
            standing,
        );
        let bodies: Vec<&str> = object["textModulesData"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["body"].as_str())
            .collect();
        assert!(bodies.contains(&"40 points to Gold"), "{bodies:?}");
        assert!(bodies.contains(&"12 points lapse"), "{bodies:?}");
    }

    #[test]
    fn long_texts_are_cut_with_an_ellipsis() {
        assert_eq!(super::cut("Tessera", 20), "Tessera");
        assert_eq!(
            super::cut("Tessera Coffee Roasters Ltd", 20)
                .chars()
                .count(),
            20
        );
        assert!(super::cut("Tessera Coffee Roasters Ltd", 20).ends_with('…'));
    }
}
