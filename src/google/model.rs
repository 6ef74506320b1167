//! Our template and member as Google's LoyaltyClass and LoyaltyObject (`google-wallet.md`
//! §3.3-3.4), with Google's length limits applied.

use serde_json::{Value, json};

use crate::domain::template::{FieldValue, Substitutions};
use crate::domain::{BarcodeFormat, FieldSpec, Member, Program, Template};

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

/// The class for a template version: everything every holder shares.
pub fn loyalty_class(
    class_id: &str,
    program: &Program,
    template: &Template,
    public_base: &str,
    hero: bool,
) -> Value {
    let design = &template.design;
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
    let mut class = json!({
        "id": class_id,
        "issuerName": cut(&program.organization_name, 20),
        "programName": cut(&program.name, 20),
        "programLogo": {
            "sourceUri": {"uri": logo},
            "contentDescription": {"defaultValue": {"language": "en", "value": cut(&program.name, 100)}},
        },
        "hexBackgroundColor": design.colors.background,
        "reviewStatus": "UNDER_REVIEW",
        "accountNameLabel": "Member",
        "accountIdLabel": "Number",
        "merchantLocations": locations,
        "textModulesData": text_modules(design, back.iter().filter(|f| is_static(f) && link(f).is_none()), |v| v.to_string()),
        "linksModuleData": {"uris": back.iter().filter_map(|f| {
            link(f).map(|uri| json!({"uri": uri, "description": cut(f.label.as_deref().unwrap_or(&f.key), 100), "id": module_id(&f.key)}))
        }).collect::<Vec<_>>()},
        "callbackOptions": {"url": format!("{public_base}/google/callback")},
        "multipleDevicesAndHoldersAllowedStatus": "ONE_USER_ALL_DEVICES",
    });
    if hero {
        class["heroImage"] = json!({
            "sourceUri": {"uri": format!("{public_base}/google/images/{}/{}/hero.png", template.id, template.version)},
            "contentDescription": {"defaultValue": {"language": "en", "value": cut(&program.name, 100)}},
        });
    }
    class
}

/// Google's `LocalizedString` for a text of the design, when the design translates it.
fn localized(design: &crate::domain::TemplateDesign, text: &str, max: usize) -> Option<Value> {
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
    design: &crate::domain::TemplateDesign,
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

/// One member's card. The balance is an `int`; the tier rides as secondary points; the back
/// fields become text modules (at most 10, ids without dots).
pub fn loyalty_object(
    object_id: &str,
    class_id: &str,
    program: &Program,
    template: &Template,
    member: &Member,
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
        standing: Default::default(),
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
        "state": "ACTIVE",
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
        object["secondaryLoyaltyPoints"] =
            json!({"label": "Tier", "balance": {"string": cut(tier, 7)}});
    }
    object
}

#[cfg(test)]
mod tests {
    use crate::domain::FieldSpec;

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
