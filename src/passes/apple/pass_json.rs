//! `pass.json` for a storeCard (`shared/spec/apple-wallet.md` §4), from a template and a member.

use serde::Serialize;

use crate::domain::template::{FieldSpec, FieldValue, Substitutions};
use crate::domain::{BarcodeFormat, Member, Pass, Program, Template};

/// Everything one pass shows.
pub struct PassContent<'a> {
    pub program: &'a Program,
    pub template: &'a Template,
    pub member: &'a Member,
    pub pass: &'a Pass,
    /// Base URL of the PassKit web service, without `/v1`.
    pub web_service_url: &'a str,
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
    barcodes: Vec<Barcode<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locations: Vec<Location<'a>>,
    store_card: StoreCard,
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
}

/// The compact `pass.json` bytes.
pub fn render(c: &PassContent<'_>) -> Vec<u8> {
    let design = &c.template.design;
    let subs = Substitutions {
        balance: c.member.points,
        tier: c.member.tier.as_deref().unwrap_or(""),
        member_name: &c.member.display_name,
        external_id: c.member.external_id.as_deref().unwrap_or(""),
        barcode: &c.member.barcode,
        program_name: &c.program.name,
    };
    let fields = |specs: &[FieldSpec]| specs.iter().map(|f| field(f, &subs)).collect();
    let alt_text = design
        .barcode
        .show_value
        .then_some(c.member.barcode.as_str());
    let mut barcodes = vec![Barcode {
        format: design.barcode.format.apple_name(),
        message: &c.member.barcode,
        // Barcode values are ASCII; iso-8859-1 is what every scanner expects [CREATE].
        message_encoding: "iso-8859-1",
        alt_text,
    }];
    if design.barcode.format == BarcodeFormat::Code128 {
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
        store_card: StoreCard {
            header_fields: fields(&design.header_fields),
            primary_fields: fields(&design.primary_fields),
            secondary_fields: fields(&design.secondary_fields),
            auxiliary_fields: fields(&design.auxiliary_fields),
            back_fields: fields(&design.back_fields),
        },
    };
    serde_json::to_vec(&json).expect("pass.json serialises")
}

fn field(spec: &FieldSpec, subs: &Substitutions<'_>) -> Field {
    let (value, number_style) = match subs.fill(&spec.value) {
        FieldValue::Number(n) => (serde_json::Value::from(n), Some("PKNumberStyleDecimal")),
        FieldValue::Text(s) => (serde_json::Value::from(s), None),
    };
    Field {
        key: spec.key.clone(),
        label: spec.label.clone(),
        value,
        change_message: spec.change_message.clone(),
        text_alignment: spec.text_alignment.map(|a| a.apple_name()),
        number_style,
    }
}
