//! `pass.json` for a storeCard (`shared/spec/apple-wallet.md` §4), from a template and a member.

use serde::Serialize;

use crate::domain::template::apple::MAX_NFC_MESSAGE;
use crate::domain::template::{FieldSpec, FieldValue, Standing, Substitutions, ValueFormat};
use crate::domain::{BarcodeFormat, CardState, Member, Pass, Program, Template};

/// Everything one pass shows.
pub struct PassContent<'a> {
    pub program: &'a Program,
    pub template: &'a Template,
    pub member: &'a Member,
    pub pass: &'a Pass,
    /// Base URL of the PassKit web service, without `/v1`.
    pub web_service_url: &'a str,
    /// Tier progress and expiry, for the placeholders that show them.
    pub standing: Standing<'a>,
    /// An inactive (ended) card is `voided`; Wallet then shows it as void and stops updating
    /// its relevance. A void card carries no barcode: it is scanned nowhere, and a reissued
    /// card's new barcode never reaches the old pass.
    pub state: CardState,
    /// When the card stops being valid (epoch ms): Apple's `expirationDate`, after which Wallet
    /// shows the pass as expired.
    pub expires_at: Option<i64>,
    /// The member's own account page (withdraw marketing consent, close the membership), a
    /// tappable link at the end of the back of the card.
    pub account_url: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PassJson<'a> {
    format_version: u8,
    pass_type_identifier: &'a str,
    team_identifier: &'a str,
    serial_number: &'a str,
    organization_name: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    logo_text: Option<&'a str>,
    background_color: &'a str,
    foreground_color: &'a str,
    label_color: &'a str,
    #[serde(rename = "webServiceURL")]
    web_service_url: &'a str,
    authentication_token: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    barcodes: Vec<Barcode<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locations: Vec<Location<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiration_date: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    voided: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sharing_prohibited: bool,
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    associated_store_identifiers: &'a [u64],
    #[serde(rename = "appLaunchURL", skip_serializing_if = "Option::is_none")]
    app_launch_url: Option<&'a str>,
    /// iOS 18 and later; storeCards take no `relevantDate`, so older iOS has no fallback here.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    relevant_dates: Vec<RelevantDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nfc: Option<Nfc<'a>>,
    store_card: StoreCard,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RelevantDate {
    start_date: String,
    end_date: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Nfc<'a> {
    message: &'a str,
    encryption_public_key: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Barcode<'a> {
    format: &'static str,
    message: &'a str,
    message_encoding: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    alt_text: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Location<'a> {
    latitude: f64,
    longitude: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    relevant_text: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StoreCard {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    header_fields: Vec<Field>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    primary_fields: Vec<Field>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secondary_fields: Vec<Field>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    auxiliary_fields: Vec<Field>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    back_fields: Vec<Field>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Field {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    value: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    change_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text_alignment: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    number_style: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    date_style: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_style: Option<&'static str>,
    /// Back fields only: `<a href>` markup that makes a link tappable (iOS 10 and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    attributed_value: Option<String>,
    /// Back fields only: which detectors turn the plain `value` into a link on older iOS.
    #[serde(skip_serializing_if = "Option::is_none")]
    data_detector_types: Option<Vec<&'static str>>,
}

/// The compact `pass.json` bytes.
pub fn render(c: &PassContent<'_>) -> Vec<u8> {
    let design = &c.template.design;
    let voided = c.state == CardState::Inactive;
    let subs = Substitutions {
        balance: c.member.points,
        tier: c
            .program
            .rules
            .tier_name(c.member.tier.as_deref())
            .unwrap_or(""),
        member_name: &c.member.display_name,
        external_id: c.member.external_id.as_deref().unwrap_or(""),
        barcode: if voided { "" } else { &c.member.barcode },
        program_name: &c.program.name,
        standing: c.standing,
    };
    // A field whose value renders empty would show its label over a blank: it is left out.
    let fields = |specs: &[FieldSpec]| {
        specs
            .iter()
            .map(|f| field(f, &subs))
            .filter(|f| f.value.as_str().is_none_or(|t| !t.trim().is_empty()))
            .collect::<Vec<_>>()
    };
    let alt = design
        .barcode
        .alt_text
        .as_deref()
        .map(|t| match subs.fill(t) {
            FieldValue::Number(n) => n.to_string(),
            FieldValue::Text(t) => t,
        });
    let alt_text = design
        .barcode
        .show_value
        .then(|| alt.as_deref().unwrap_or(&c.member.barcode));
    let mut barcodes = vec![Barcode {
        format: design.barcode.format.apple_name(),
        message: &c.member.barcode,
        // Barcode values are ASCII; iso-8859-1 is what every scanner expects [CREATE].
        message_encoding: "iso-8859-1",
        alt_text,
    }];
    if voided {
        barcodes.clear();
    }
    if !voided && design.barcode.format == BarcodeFormat::Code128 {
        // watchOS cannot show Code128: a QR after it keeps the card scannable there (§4.4).
        barcodes.push(Barcode {
            format: BarcodeFormat::Qr.apple_name(),
            message: &c.member.barcode,
            message_encoding: "iso-8859-1",
            alt_text,
        });
    }
    let json = PassJson {
        format_version: 1,
        pass_type_identifier: &c.program.pass_type_identifier,
        team_identifier: &c.program.team_identifier,
        serial_number: &c.pass.serial_number,
        organization_name: &c.program.organization_name,
        description: &design.description,
        logo_text: design.logo_text.as_deref(),
        background_color: &design.colors.background,
        foreground_color: &design.colors.foreground,
        label_color: &design.colors.label,
        web_service_url: c.web_service_url,
        authentication_token: &c.pass.authentication_token,
        barcodes,
        locations: design
            .locations
            .iter()
            .map(|l| Location {
                latitude: l.latitude,
                longitude: l.longitude,
                relevant_text: l.relevant_text.as_deref(),
            })
            .collect(),
        // The card's own end (issue 16) first, else the template's validity from issue.
        expiration_date: c
            .expires_at
            .or_else(|| {
                let days = i64::from(design.apple.validity_days?);
                c.pass.created_at.checked_add(days * 86_400_000)
            })
            .and_then(w3c_instant),
        voided,
        sharing_prohibited: design.apple.sharing_prohibited,
        associated_store_identifiers: &design.apple.associated_store_identifiers,
        app_launch_url: design.apple.app_launch_url.as_deref(),
        relevant_dates: design
            .apple
            .relevant_dates
            .iter()
            .filter_map(|d| {
                Some(RelevantDate {
                    start_date: w3c_written(&d.start)?,
                    end_date: w3c_written(&d.end)?,
                })
            })
            .collect(),
        // The barcode value is the NFC message; Apple allows 64 bytes.
        nfc: design
            .apple
            .nfc_encryption_public_key
            .as_deref()
            .filter(|_| !voided && c.member.barcode.len() <= MAX_NFC_MESSAGE)
            .map(|key| Nfc {
                message: &c.member.barcode,
                encryption_public_key: key.trim(),
            }),
        store_card: StoreCard {
            header_fields: fields(&design.header_fields),
            primary_fields: fields(&design.primary_fields),
            secondary_fields: fields(&design.secondary_fields),
            auxiliary_fields: fields(&design.auxiliary_fields),
            back_fields: fields(&design.back_fields_all())
                .into_iter()
                .chain(c.account_url.map(account_field))
                .map(tappable)
                .collect(),
        },
    };
    serde_json::to_vec(&json).expect("pass.json serialises")
}

fn field(spec: &FieldSpec, subs: &Substitutions<'_>) -> Field {
    let filled = subs.fill(&spec.value);
    let mut f = Field {
        key: spec.key.clone(),
        label: spec.label.clone(),
        value: serde_json::Value::Null,
        change_message: spec.change_message.clone(),
        text_alignment: spec.text_alignment.map(|a| a.apple_name()),
        number_style: None,
        currency_code: None,
        date_style: None,
        time_style: None,
        attributed_value: None,
        data_detector_types: None,
    };
    // A format applies only to a value of its kind: Wallet refuses a pass with a number style
    // on text or a date style on anything but a W3C date (§4.2, §4.3). Anything else shows as
    // plain text, so an empty expiry date never breaks the pass.
    let number = match &filled {
        FieldValue::Number(n) => Some(serde_json::Value::from(*n)),
        FieldValue::Text(t) => t
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|_| {
                spec.format
                    .is_some_and(|f| f != ValueFormat::Date && f != ValueFormat::DateTime)
            })
            .map(serde_json::Value::from),
    };
    match (spec.format, number, filled) {
        (Some(ValueFormat::Percent), Some(n), _) => {
            f.value = n;
            f.number_style = Some("PKNumberStylePercent");
        }
        (Some(ValueFormat::Currency), Some(n), _) => {
            f.value = n;
            f.currency_code = spec.currency_code.clone();
        }
        (None | Some(ValueFormat::Number), Some(n), _) => {
            f.value = n;
            f.number_style = Some("PKNumberStyleDecimal");
        }
        (Some(ValueFormat::Date | ValueFormat::DateTime), _, FieldValue::Text(t))
            if is_w3c_date(&t) =>
        {
            f.date_style = Some("PKDateStyleMedium");
            f.time_style = Some(if spec.format == Some(ValueFormat::DateTime) {
                "PKDateStyleShort"
            } else {
                "PKDateStyleNone"
            });
            f.value = serde_json::Value::from(t);
        }
        (_, _, FieldValue::Number(n)) => f.value = serde_json::Value::from(n),
        (_, _, FieldValue::Text(t)) => f.value = serde_json::Value::from(t),
    }
    f
}

/// A back field whose whole value is a phone, e-mail or web link shows as a tappable link, as
/// Apple documents for back fields: the plain text (no `tel:`/`mailto:`) as `value` with the
/// matching `dataDetectorTypes`, and `attributedValue` with the `<a href>` newer iOS shows.
/// The back field linking to the member's account page.
fn account_field(url: &str) -> Field {
    Field {
        key: "tessera_account".into(),
        label: Some("Your data and membership".into()),
        value: url.into(),
        change_message: None,
        text_alignment: None,
        number_style: None,
        currency_code: None,
        date_style: None,
        time_style: None,
        attributed_value: None,
        data_detector_types: None,
    }
}

fn tappable(mut f: Field) -> Field {
    let Some(v) = f.value.as_str().map(str::trim) else {
        return f;
    };
    if v.contains(char::is_whitespace) {
        return f;
    }
    let (shown, detector) = if let Some(number) = v.strip_prefix("tel:") {
        (number.to_string(), "PKDataDetectorTypePhoneNumber")
    } else if let Some(address) = v.strip_prefix("mailto:") {
        (address.to_string(), "PKDataDetectorTypeLink")
    } else if v.starts_with("https://") || v.starts_with("http://") {
        (v.to_string(), "PKDataDetectorTypeLink")
    } else {
        return f;
    };
    f.attributed_value = Some(format!(
        "<a href=\"{}\">{}</a>",
        html_escape(v),
        html_escape(&shown)
    ));
    f.value = serde_json::Value::from(shown);
    f.data_detector_types = Some(vec![detector]);
    f
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The instant `ms` as a W3C date-time in UTC (`2026-12-31T12:00:00Z`).
fn w3c_instant(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// A date the template validated, written back as `YYYY-MM-DDThh:mm:ss±hh:mm` with its own
/// offset: no fractional seconds, which some devices fail to parse (§4.3).
pub(super) fn w3c_written(s: &str) -> Option<String> {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
    );
    crate::domain::template::apple::parse_instant(s)?
        .format(&format)
        .ok()
}

/// `YYYY-MM-DDThh:mm(:ss)?(Z|±hh:mm)`, the only date form Wallet parses (§4.3).
fn is_w3c_date(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_field(value: &str) -> Field {
        field(
            &FieldSpec {
                key: "k".into(),
                label: Some("Label".into()),
                value: value.into(),
                ..FieldSpec::default()
            },
            &Substitutions {
                balance: 0,
                tier: "",
                member_name: "Ada",
                external_id: "",
                barcode: "B",
                program_name: "P",
                standing: Default::default(),
            },
        )
    }

    #[test]
    fn contact_back_fields_are_tappable_without_their_scheme() {
        let tel = tappable(text_field("tel:+441234567"));
        assert_eq!(tel.value, "+441234567");
        assert_eq!(
            tel.data_detector_types,
            Some(vec!["PKDataDetectorTypePhoneNumber"])
        );
        assert_eq!(
            tel.attributed_value.as_deref(),
            Some("<a href=\"tel:+441234567\">+441234567</a>")
        );
        let mail = tappable(text_field("mailto:cards@example.com"));
        assert_eq!(mail.value, "cards@example.com");
        assert_eq!(
            mail.data_detector_types,
            Some(vec!["PKDataDetectorTypeLink"])
        );
        let web = tappable(text_field("https://example.com/?a=1&b=2"));
        assert_eq!(web.value, "https://example.com/?a=1&b=2");
        assert_eq!(
            web.attributed_value.as_deref(),
            Some(
                "<a href=\"https://example.com/?a=1&amp;b=2\">https://example.com/?a=1&amp;b=2</a>"
            )
        );
        let prose = tappable(text_field("Call tel:+441234567 today"));
        assert!(prose.attributed_value.is_none() && prose.data_detector_types.is_none());
        assert_eq!(prose.value, "Call tel:+441234567 today");
    }
}
