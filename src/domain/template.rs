//! The storeCard design a template holds, and Apple's rules for it
//! (`shared/spec/apple-wallet.md` §4: field limits, unique keys, `%@`, colours, locations).
//!
//! Field values may hold placeholders such as `{{balance}}`, filled per member when a pass is
//! built. The design is stored as JSON: it is our own versioned document, not a wire format.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::color::Rgb;
use super::{Checker, Invalid};

pub mod apple;
pub mod checks;
pub mod i18n;
pub mod info;

pub use info::CardInfo;

/// The `changeMessage` a `{{balance}}` field gets when the design gives none.
pub const DEFAULT_BALANCE_MESSAGE: &str = "You now have %@ points";

/// Placeholders a field value may use, filled per member.
pub const PLACEHOLDERS: &[&str] = &[
    "balance",
    "tier",
    "member_name",
    "member_number",
    "external_id",
    "barcode",
    "program_name",
    "next_tier",
    "points_to_next_tier",
    "next_expiry_date",
    "next_expiry_points",
    "available",
];

/// Placeholders whose values need the member's standing (tier progress, expiry) from the ledger.
const STANDING_PLACEHOLDERS: &[&str] = &[
    "available",
    "next_tier",
    "points_to_next_tier",
    "next_expiry_date",
    "next_expiry_points",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDesign {
    /// Read by VoiceOver and shown in Wallet's pass details.
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_text: Option<String>,
    pub colors: Colors,
    #[serde(default)]
    pub header_fields: Vec<FieldSpec>,
    #[serde(default)]
    pub primary_fields: Vec<FieldSpec>,
    #[serde(default)]
    pub secondary_fields: Vec<FieldSpec>,
    #[serde(default)]
    pub auxiliary_fields: Vec<FieldSpec>,
    #[serde(default)]
    pub back_fields: Vec<FieldSpec>,
    #[serde(default)]
    pub barcode: BarcodeSpec,
    #[serde(default)]
    pub locations: Vec<Location>,
    /// Back-of-card information: stores, links, support, offers, terms.
    #[serde(default, skip_serializing_if = "CardInfo::is_empty")]
    pub info: CardInfo,
    /// Translations by language tag (`de`, `pt-BR`): each maps an English text of the design
    /// (a label, a fixed value, the description) to its translation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translations: BTreeMap<String, BTreeMap<String, String>>,
    /// Apple-only keys: sharing, the app, relevant dates, validity, NFC.
    #[serde(default, skip_serializing_if = "apple::AppleSettings::is_empty")]
    pub apple: apple::AppleSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Colors {
    pub background: String,
    pub foreground: String,
    pub label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Text with optional `{{placeholder}}`s. Exactly `{{balance}}` becomes a number.
    pub value: String,
    /// Lock-screen message when the value changes; must contain `%@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_alignment: Option<TextAlignment>,
    /// How Wallet shows the value: as a number, percentage, currency amount or date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ValueFormat>,
    /// ISO 4217 code, with `format: currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_code: Option<String>,
}

/// Display formats Wallet applies on the device, in the holder's locale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    Number,
    Percent,
    Currency,
    Date,
    DateTime,
}

impl ValueFormat {
    pub const ALL: [ValueFormat; 5] = [
        ValueFormat::Number,
        ValueFormat::Percent,
        ValueFormat::Currency,
        ValueFormat::Date,
        ValueFormat::DateTime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ValueFormat::Number => "number",
            ValueFormat::Percent => "percent",
            ValueFormat::Currency => "currency",
            ValueFormat::Date => "date",
            ValueFormat::DateTime => "date_time",
        }
    }

    pub fn parse(s: &str) -> Option<ValueFormat> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TextAlignment {
    Left,
    Center,
    Right,
    Natural,
}

impl TextAlignment {
    pub const ALL: [TextAlignment; 4] = [
        TextAlignment::Left,
        TextAlignment::Center,
        TextAlignment::Right,
        TextAlignment::Natural,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TextAlignment::Left => "left",
            TextAlignment::Center => "center",
            TextAlignment::Right => "right",
            TextAlignment::Natural => "natural",
        }
    }

    pub fn parse(s: &str) -> Option<TextAlignment> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    pub fn apple_name(self) -> &'static str {
        match self {
            TextAlignment::Left => "PKTextAlignmentLeft",
            TextAlignment::Center => "PKTextAlignmentCenter",
            TextAlignment::Right => "PKTextAlignmentRight",
            TextAlignment::Natural => "PKTextAlignmentNatural",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BarcodeSpec {
    pub format: BarcodeFormat,
    /// Show the barcode value as text under the barcode, for manual entry at the till.
    #[serde(default = "yes")]
    pub show_value: bool,
    /// The text under the barcode (placeholders allowed); the barcode value when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_text: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for BarcodeSpec {
    fn default() -> Self {
        BarcodeSpec {
            format: BarcodeFormat::Qr,
            show_value: true,
            alt_text: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BarcodeFormat {
    Qr,
    Pdf417,
    Aztec,
    Code128,
}

impl BarcodeFormat {
    pub const ALL: [BarcodeFormat; 4] = [
        BarcodeFormat::Qr,
        BarcodeFormat::Pdf417,
        BarcodeFormat::Aztec,
        BarcodeFormat::Code128,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BarcodeFormat::Qr => "qr",
            BarcodeFormat::Pdf417 => "pdf417",
            BarcodeFormat::Aztec => "aztec",
            BarcodeFormat::Code128 => "code128",
        }
    }

    pub fn parse(s: &str) -> Option<BarcodeFormat> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    pub fn apple_name(self) -> &'static str {
        match self {
            BarcodeFormat::Qr => "PKBarcodeFormatQR",
            BarcodeFormat::Pdf417 => "PKBarcodeFormatPDF417",
            BarcodeFormat::Aztec => "PKBarcodeFormatAztec",
            BarcodeFormat::Code128 => "PKBarcodeFormatCode128",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevant_text: Option<String>,
}

/// Apple's storeCard limits [CREATE]: 3 header, 1 primary, and 4 secondary plus auxiliary
/// fields combined (the limit with a square barcode, the common case; we apply it always so a
/// template never depends on its barcode format to display).
const MAX_HEADER: usize = 3;
const MAX_PRIMARY: usize = 1;
const MAX_SECONDARY_AUXILIARY: usize = 4;
pub const MAX_BACK: usize = 20;
pub const MAX_LOCATIONS: usize = 10;

impl TemplateDesign {
    /// Checks every rule and returns the design with colours in Apple's `rgb()` form.
    pub fn validate(mut self) -> Result<TemplateDesign, Invalid> {
        let mut c = Checker::default();
        super::check_text(&mut c, "description", &self.description, 500);
        for (name, value) in [
            ("background", &mut self.colors.background),
            ("foreground", &mut self.colors.foreground),
            ("label", &mut self.colors.label),
        ] {
            match Rgb::parse(value) {
                Some(rgb) => *value = rgb.to_string(),
                None => c.fail(
                    format!("colors.{name}"),
                    format!("colors.{name} must be a colour like #3c414c or rgb(60, 65, 76), got {value:?}"),
                ),
            }
        }
        if let Some(t) = &self.logo_text {
            c.check(t.chars().count() <= 100, "logo_text", || {
                "logo_text must be at most 100 characters".into()
            });
        }
        let back = self.back_fields.len() + self.info.back_fields().len();
        let counts = [
            ("header_fields", self.header_fields.len(), MAX_HEADER),
            ("primary_fields", self.primary_fields.len(), MAX_PRIMARY),
            ("back_fields", back, MAX_BACK),
        ];
        for (area, n, max) in counts {
            c.check(n <= max, area, || {
                format!(
                    "a storeCard may have at most {max} {}, got {n}",
                    area.replace('_', " ")
                )
            });
        }
        let combined = self.secondary_fields.len() + self.auxiliary_fields.len();
        c.check(combined <= MAX_SECONDARY_AUXILIARY, "secondary_fields", || {
            format!(
                "a storeCard may have at most {MAX_SECONDARY_AUXILIARY} secondary+auxiliary fields, got {combined}"
            )
        });
        // The balance shows on the lock screen when it changes unless a designer says otherwise.
        for field in self.fields_mut() {
            if field.value.trim() == "{{balance}}" && field.change_message.is_none() {
                field.change_message = Some(DEFAULT_BALANCE_MESSAGE.into());
            }
        }
        let mut keys = HashSet::new();
        for (area, field) in self.all_fields() {
            check_field(&mut c, area, field, &mut keys);
        }
        for field in self.info.back_fields() {
            if !keys.insert(field.key.clone()) {
                c.fail(
                    "back_fields",
                    format!(
                        "field key {:?} is used by the back-of-card information; pick another key",
                        field.key
                    ),
                );
            }
        }
        self.info.check(&mut c);
        self.apple.check(&mut c);
        if let Some(alt) = &self.barcode.alt_text
            && let Err(name) = check_placeholders(alt)
        {
            c.fail(
                "barcode.alt_text",
                format!(
                    "the barcode text uses unknown placeholder {{{{{name}}}}}; known: {}",
                    PLACEHOLDERS.join(", ")
                ),
            );
        }
        i18n::check(&mut c, &self.translations);
        c.check(self.locations.len() <= MAX_LOCATIONS, "locations", || {
            format!(
                "a pass may have at most {MAX_LOCATIONS} locations, got {}",
                self.locations.len()
            )
        });
        for (i, l) in self.locations.iter().enumerate() {
            c.check(
                (-90.0..=90.0).contains(&l.latitude) && (-180.0..=180.0).contains(&l.longitude),
                "locations",
                || {
                    format!(
                        "locations[{i}] must have latitude in -90..90 and longitude in -180..180"
                    )
                },
            );
        }
        c.finish()?;
        Ok(self)
    }

    fn fields_mut(&mut self) -> impl Iterator<Item = &mut FieldSpec> {
        self.header_fields
            .iter_mut()
            .chain(self.primary_fields.iter_mut())
            .chain(self.secondary_fields.iter_mut())
            .chain(self.auxiliary_fields.iter_mut())
            .chain(self.back_fields.iter_mut())
    }

    /// The back of the card as Wallet shows it: current offers, the designer's own back fields,
    /// then stores, links, support and terms.
    pub fn back_fields_all(&self) -> Vec<FieldSpec> {
        let info = self.info.back_fields();
        let (offers, rest): (Vec<_>, Vec<_>) = info
            .into_iter()
            .partition(|f| f.key.starts_with("info_offer"));
        offers
            .into_iter()
            .chain(self.back_fields.iter().cloned())
            .chain(rest)
            .collect()
    }

    /// True when a field uses a placeholder that needs the member's tier progress or expiry.
    pub fn uses_standing(&self) -> bool {
        self.all_fields()
            .map(|(_, f)| f.value.as_str())
            .chain(self.barcode.alt_text.as_deref())
            .any(|v| STANDING_PLACEHOLDERS.iter().any(|p| v.contains(p)))
    }

    /// Every field with the name of the area it sits in, front to back.
    pub fn all_fields(&self) -> impl Iterator<Item = (&'static str, &FieldSpec)> {
        [
            ("header_fields", &self.header_fields),
            ("primary_fields", &self.primary_fields),
            ("secondary_fields", &self.secondary_fields),
            ("auxiliary_fields", &self.auxiliary_fields),
            ("back_fields", &self.back_fields),
        ]
        .into_iter()
        .flat_map(|(area, fields)| fields.iter().map(move |f| (area, f)))
    }
}

fn check_field(c: &mut Checker, area: &str, field: &FieldSpec, keys: &mut HashSet<String>) {
    let at = format!("{area}.{}", field.key);
    let key_ok = !field.key.is_empty()
        && field.key.len() <= 64
        && field
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !key_ok {
        c.fail(
            area,
            format!(
                "field key {:?} in {area} must be 1 to 64 letters, digits, '_' or '-'",
                field.key
            ),
        );
    } else if !keys.insert(field.key.clone()) {
        // Keys are unique across the whole pass, not per area [CREATE].
        c.fail(
            &at,
            format!(
                "field key {:?} is used twice; keys must be unique across the pass",
                field.key
            ),
        );
    }
    if let Some(msg) = &field.change_message
        && !msg.contains("%@")
    {
        c.fail(
            &at,
            format!(
                "changeMessage of field {:?} must contain %@, the new value",
                field.key
            ),
        );
    }
    if field.format == Some(ValueFormat::Currency)
        && !field
            .currency_code
            .as_deref()
            .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        c.fail(
            &at,
            format!(
                "field {:?} is formatted as currency and needs a 3-letter ISO 4217 code such as EUR",
                field.key
            ),
        );
    }
    if field.text_alignment.is_some() && (area == "primary_fields" || area == "back_fields") {
        c.fail(
            &at,
            format!(
                "field {:?}: text_alignment is not allowed on {area}",
                field.key
            ),
        );
    }
    if let Err(name) = check_placeholders(&field.value) {
        c.fail(
            &at,
            format!(
                "field {:?} uses unknown placeholder {{{{{name}}}}}; known: {}",
                field.key,
                PLACEHOLDERS.join(", ")
            ),
        );
    }
}

/// Checks that every `{{name}}` in `text` is a known placeholder; `Err` names the first that is not.
fn check_placeholders(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Ok(());
        };
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(name.to_string());
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// The values placeholders are filled with for one member.
pub struct Substitutions<'a> {
    pub balance: i64,
    /// The member's tier name, empty without tiers.
    pub tier: &'a str,
    pub member_name: &'a str,
    pub external_id: &'a str,
    pub barcode: &'a str,
    pub program_name: &'a str,
    /// Tier progress and expiry; zeros and empty when the design uses none of them.
    pub standing: Standing<'a>,
}

/// What the card shows of the member's ledger standing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Standing<'a> {
    /// The next tier's name, empty at the top tier or without tiers.
    pub next_tier: &'a str,
    pub points_to_next_tier: i64,
    /// The earliest expiry (milliseconds) and the points lapsing then.
    pub next_expiry: Option<(i64, i64)>,
    /// Points reserved by open holds: `{{available}}` is the balance less these.
    pub held: i64,
}

/// A W3C date-time at midnight UTC of an instant, as Wallet requires (`apple-wallet.md` §4.3).
pub fn w3c_date(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::macros::format_description!(
        "[year]-[month]-[day]T00:00:00Z"
    ))
    .unwrap_or_default()
}

/// A filled field value: a number when the whole value is a numeric placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Number(i64),
    Text(String),
}

impl Substitutions<'_> {
    pub fn fill(&self, template: &str) -> FieldValue {
        match template.trim() {
            "{{balance}}" => return FieldValue::Number(self.balance),
            "{{available}}" => return FieldValue::Number(self.balance - self.standing.held),
            "{{points_to_next_tier}}" => {
                return FieldValue::Number(self.standing.points_to_next_tier);
            }
            "{{next_expiry_points}}" => {
                return FieldValue::Number(self.standing.next_expiry.map_or(0, |(_, p)| p));
            }
            _ => {}
        }
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                rest = &rest[start..];
                break;
            };
            match after[..end].trim() {
                "balance" => out.push_str(&self.balance.to_string()),
                "available" => out.push_str(&(self.balance - self.standing.held).to_string()),
                "tier" => out.push_str(self.tier),
                "member_name" => out.push_str(self.member_name),
                "external_id" => out.push_str(self.external_id),
                "barcode" => out.push_str(self.barcode),
                "program_name" => out.push_str(self.program_name),
                "member_number" => out.push_str(if self.external_id.is_empty() {
                    self.barcode
                } else {
                    self.external_id
                }),
                "next_tier" => out.push_str(self.standing.next_tier),
                "points_to_next_tier" => {
                    out.push_str(&self.standing.points_to_next_tier.to_string())
                }
                "next_expiry_date" => {
                    if let Some((at, _)) = self.standing.next_expiry {
                        out.push_str(&w3c_date(at));
                    }
                }
                "next_expiry_points" => {
                    out.push_str(&self.standing.next_expiry.map_or(0, |(_, p)| p).to_string())
                }
                other => {
                    out.push_str("{{");
                    out.push_str(other);
                    out.push_str("}}");
                }
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        FieldValue::Text(out)
    }
}

#[cfg(test)]
mod tests;
