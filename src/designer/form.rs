//! The designer's HTML form and the design it stands for, both ways: `rows` lays a design out
//! as form rows (with empty slots to fill), `parse` reads a submitted form back into a design.
//! Input names are flat (`secondary_fields.1.label`) so the form works without JavaScript.

use std::collections::{BTreeMap, HashMap};

use crate::domain::template::apple::{AppleSettings, MAX_RELEVANT_DATES, RelevantInterval};
use crate::domain::template::info::{LinkInfo, OfferInfo, StoreInfo};
use crate::domain::template::{
    BarcodeSpec, CardInfo, Colors, Location, MAX_LOCATIONS, TextAlignment, ValueFormat,
};
use crate::domain::{BarcodeFormat, FieldSpec, Problem, TemplateDesign};

/// The field areas of a storeCard, with the rows the form offers for each (the wallet's limit,
/// except the combined secondary+auxiliary limit, which the checks explain when crossed).
pub const AREAS: [(&str, &str, usize); 5] = [
    (
        "header_fields",
        "Header fields (top right, beside the logo)",
        3,
    ),
    ("primary_fields", "Primary field (large, over the strip)", 1),
    ("secondary_fields", "Secondary fields (below the strip)", 4),
    (
        "auxiliary_fields",
        "Auxiliary fields (below the secondary row)",
        4,
    ),
    ("back_fields", "Back fields (the back of the card)", 0),
];

/// One field row of the form.
#[derive(Debug, Clone, Default)]
pub struct FieldRow {
    pub key: String,
    pub label: String,
    pub value: String,
    pub align: String,
    pub format: String,
    pub currency: String,
    pub change: String,
}

#[derive(Debug, Clone)]
pub struct AreaRows {
    pub area: &'static str,
    pub title: &'static str,
    pub rows: Vec<FieldRow>,
    /// Primary and back fields take no alignment in Apple's schema.
    pub aligns: bool,
}

#[derive(Debug, Clone, Default)]
pub struct LocationRow {
    pub lat: String,
    pub lng: String,
    pub text: String,
}

/// One language column of the translations table.
#[derive(Debug, Clone, Default)]
pub struct Language {
    pub tag: String,
    /// Translation per source text, in the order of `FormRows::sources`.
    pub texts: Vec<String>,
}

/// A design laid out as the form shows it.
#[derive(Debug, Clone)]
pub struct FormRows {
    pub areas: Vec<AreaRows>,
    pub stores: Vec<StoreInfo>,
    pub social: Vec<LinkInfo>,
    pub offers: Vec<OfferInfo>,
    pub locations: Vec<LocationRow>,
    pub sources: Vec<String>,
    pub languages: Vec<Language>,
    /// Apple's relevance intervals, with a spare row.
    pub relevant: Vec<RelevantInterval>,
    /// App Store ids, comma-separated.
    pub store_ids: String,
    pub validity_days: String,
}

fn pad<T: Default + Clone>(mut v: Vec<T>, spare: usize, min: usize, max: usize) -> Vec<T> {
    let want = (v.len() + spare).max(min).min(max.max(v.len()));
    v.resize(want, T::default());
    v
}

fn row(f: &FieldSpec) -> FieldRow {
    FieldRow {
        key: f.key.clone(),
        label: f.label.clone().unwrap_or_default(),
        value: f.value.clone(),
        align: f
            .text_alignment
            .map(|a| a.name().to_string())
            .unwrap_or_default(),
        format: f.format.map(|a| a.name().to_string()).unwrap_or_default(),
        currency: f.currency_code.clone().unwrap_or_default(),
        change: f.change_message.clone().unwrap_or_default(),
    }
}

/// The form rows for `design`, with spare empty rows where more may be added.
pub fn rows(design: &TemplateDesign, raw_locations: Option<Vec<LocationRow>>) -> FormRows {
    let areas = AREAS
        .iter()
        .map(|&(area, title, slots)| {
            let fields = match area {
                "header_fields" => &design.header_fields,
                "primary_fields" => &design.primary_fields,
                "secondary_fields" => &design.secondary_fields,
                "auxiliary_fields" => &design.auxiliary_fields,
                _ => &design.back_fields,
            };
            let rows: Vec<FieldRow> = fields.iter().map(row).collect();
            let rows = if slots == 0 {
                pad(rows, 2, 3, 20)
            } else {
                pad(rows, slots, slots, slots)
            };
            AreaRows {
                area,
                title,
                rows,
                aligns: area != "primary_fields" && area != "back_fields",
            }
        })
        .collect();
    let locations = raw_locations.unwrap_or_else(|| {
        design
            .locations
            .iter()
            .map(|l| LocationRow {
                lat: l.latitude.to_string(),
                lng: l.longitude.to_string(),
                text: l.relevant_text.clone().unwrap_or_default(),
            })
            .collect()
    });
    let sources = design.translatable_texts();
    let mut languages: Vec<Language> = design
        .translations
        .iter()
        .map(|(tag, map)| Language {
            tag: tag.clone(),
            texts: sources
                .iter()
                .map(|s| map.get(s).cloned().unwrap_or_default())
                .collect(),
        })
        .collect();
    languages.push(Language {
        tag: String::new(),
        texts: vec![String::new(); sources.len()],
    });
    FormRows {
        areas,
        stores: pad(design.info.stores.clone(), 1, 2, 20),
        social: pad(design.info.social.clone(), 1, 2, 10),
        offers: pad(design.info.offers.clone(), 1, 2, 10),
        locations: pad(locations, 2, 3, MAX_LOCATIONS),
        sources,
        languages,
        relevant: pad(
            design.apple.relevant_dates.clone(),
            1,
            2,
            MAX_RELEVANT_DATES,
        ),
        store_ids: design
            .apple
            .associated_store_identifiers
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        validity_days: design
            .apple
            .validity_days
            .map(|d| d.to_string())
            .unwrap_or_default(),
    }
}

/// A submitted form, by input name.
pub struct Submitted(HashMap<String, String>);

impl Submitted {
    pub fn new(pairs: Vec<(String, String)>) -> Submitted {
        Submitted(pairs.into_iter().collect())
    }

    /// The trimmed value of an input, empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", |v| v.trim())
    }

    fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// Indices `i` for which some `prefix.i.*` input was sent, in order.
    fn indices(&self, prefix: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(prefix)?.strip_prefix('.'))
            .filter_map(|rest| rest.split('.').next()?.parse().ok())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// What a submitted form means: the design, the raw location rows (kept as typed so a bad
/// number is shown back, not lost), and the problems reading it.
pub struct Parsed {
    pub name: String,
    pub design: TemplateDesign,
    pub raw_locations: Vec<LocationRow>,
    pub problems: Vec<Problem>,
}

pub fn parse(f: &Submitted) -> Parsed {
    let mut problems = Vec::new();
    let mut fields = |area: &str| -> Vec<FieldSpec> {
        f.indices(area)
            .into_iter()
            .filter_map(|i| {
                let at = |k: &str| f.get(&format!("{area}.{i}.{k}")).to_string();
                let (key, label, value) = (at("key"), at("label"), at("value"));
                // A row whose label and value were cleared is gone, whatever its key says.
                if label.is_empty() && value.is_empty() {
                    return None;
                }
                let format = at("format");
                let format = match format.as_str() {
                    "" => None,
                    s => {
                        let parsed = ValueFormat::parse(s);
                        if parsed.is_none() {
                            problems.push(problem(area, format!("unknown format {s:?}")));
                        }
                        parsed
                    }
                };
                Some(FieldSpec {
                    // A marketer need not invent keys: the row's place names the field.
                    key: if key.is_empty() {
                        format!("{}_{i}", area.trim_end_matches("_fields"))
                    } else {
                        key
                    },
                    label: Some(label).filter(|l| !l.is_empty()),
                    value,
                    change_message: Some(at("change")).filter(|c| !c.is_empty()),
                    text_alignment: TextAlignment::parse(&at("align")),
                    format,
                    currency_code: Some(at("currency").to_uppercase()).filter(|c| !c.is_empty()),
                })
            })
            .collect()
    };
    let header_fields = fields("header_fields");
    let primary_fields = fields("primary_fields");
    let secondary_fields = fields("secondary_fields");
    let auxiliary_fields = fields("auxiliary_fields");
    let back_fields = fields("back_fields");

    // Apple-only keys: every one has an input, or saving the form would drop it.
    let mut store_ids = Vec::new();
    for part in f
        .get("apple.store_ids")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
    {
        match part.parse::<u64>() {
            Ok(id) => store_ids.push(id),
            Err(_) => problems.push(problem(
                "apple",
                format!("App Store ids are numbers, such as 284882215; got {part:?}"),
            )),
        }
    }
    let validity_days = match f.get("apple.validity_days") {
        "" => None,
        s => match s.parse::<u32>() {
            Ok(days) => Some(days),
            Err(_) => {
                problems.push(problem(
                    "apple",
                    format!("the validity is a number of days; got {s:?}"),
                ));
                None
            }
        },
    };
    let apple = AppleSettings {
        sharing_prohibited: !f.get("apple.sharing_prohibited").is_empty(),
        associated_store_identifiers: store_ids,
        app_launch_url: f.opt("apple.app_launch_url"),
        relevant_dates: f
            .indices("apple.relevant")
            .into_iter()
            .map(|i| RelevantInterval {
                start: f.get(&format!("apple.relevant.{i}.start")).into(),
                end: f.get(&format!("apple.relevant.{i}.end")).into(),
            })
            .filter(|d| !(d.start.is_empty() && d.end.is_empty()))
            .collect(),
        validity_days,
        nfc_encryption_public_key: f.opt("apple.nfc_key"),
    };

    let barcode = BarcodeSpec {
        format: BarcodeFormat::parse(f.get("barcode_format")).unwrap_or(BarcodeFormat::Qr),
        show_value: !f.get("barcode_show").is_empty(),
        alt_text: f.opt("barcode_alt"),
    };

    let mut raw_locations = Vec::new();
    let mut locations = Vec::new();
    for i in f.indices("loc") {
        let row = LocationRow {
            lat: f.get(&format!("loc.{i}.lat")).to_string(),
            lng: f.get(&format!("loc.{i}.lng")).to_string(),
            text: f.get(&format!("loc.{i}.text")).to_string(),
        };
        if row.lat.is_empty() && row.lng.is_empty() && row.text.is_empty() {
            continue;
        }
        match (row.lat.parse::<f64>(), row.lng.parse::<f64>()) {
            (Ok(latitude), Ok(longitude)) => locations.push(Location {
                latitude,
                longitude,
                relevant_text: Some(row.text.clone()).filter(|t| !t.is_empty()),
            }),
            _ => problems.push(problem(
                "locations",
                format!(
                    "location {} needs a latitude and a longitude in decimal degrees, such as 52.3731 and 4.8922",
                    raw_locations.len() + 1
                ),
            )),
        }
        raw_locations.push(row);
    }

    let info = CardInfo {
        stores: f
            .indices("info.stores")
            .into_iter()
            .map(|i| StoreInfo {
                name: f.get(&format!("info.stores.{i}.name")).into(),
                address: f.get(&format!("info.stores.{i}.address")).into(),
                hours: f.get(&format!("info.stores.{i}.hours")).into(),
            })
            .filter(|s| !(s.name.is_empty() && s.address.is_empty() && s.hours.is_empty()))
            .collect(),
        website: f.opt("info.website"),
        social: f
            .indices("info.social")
            .into_iter()
            .map(|i| LinkInfo {
                label: f.get(&format!("info.social.{i}.label")).into(),
                url: f.get(&format!("info.social.{i}.url")).into(),
            })
            .filter(|l| !(l.label.is_empty() && l.url.is_empty()))
            .collect(),
        support_email: f.opt("info.support_email"),
        support_phone: f.opt("info.support_phone"),
        offers: f
            .indices("info.offers")
            .into_iter()
            .map(|i| OfferInfo {
                title: f.get(&format!("info.offers.{i}.title")).into(),
                text: f.get(&format!("info.offers.{i}.text")).into(),
            })
            .filter(|o| !(o.title.is_empty() && o.text.is_empty()))
            .collect(),
        terms: f.opt("info.terms"),
    };

    // Translations: `tr_lang.j` names language column j; `tr.j.k` translates `tr_src.k`.
    let sources: BTreeMap<usize, String> = f
        .indices("tr_src")
        .into_iter()
        .map(|k| (k, f.get(&format!("tr_src.{k}")).to_string()))
        .collect();
    let mut translations: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for j in f.indices("tr_lang") {
        let tag = f.get(&format!("tr_lang.{j}")).to_string();
        if tag.is_empty() {
            continue;
        }
        let texts = translations.entry(tag).or_default();
        for (k, src) in &sources {
            let t = f.get(&format!("tr.{j}.{k}"));
            if !t.is_empty() && !src.is_empty() {
                texts.insert(src.clone(), t.to_string());
            }
        }
    }

    let design = TemplateDesign {
        description: f.get("description").into(),
        logo_text: f.opt("logo_text"),
        colors: Colors {
            background: f.get("color_background").into(),
            foreground: f.get("color_foreground").into(),
            label: f.get("color_label").into(),
        },
        header_fields,
        primary_fields,
        secondary_fields,
        auxiliary_fields,
        back_fields,
        barcode,
        locations,
        info,
        translations,
        apple,
    };
    Parsed {
        name: f.get("name").into(),
        design,
        raw_locations,
        problems,
    }
}

fn problem(field: &str, message: String) -> Problem {
    Problem {
        field: field.into(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs a browser would send for the form `rows` draws, filled from `design`.
    fn submit(design: &TemplateDesign) -> Vec<(String, String)> {
        let r = rows(design, None);
        let mut out = vec![
            ("name".to_string(), "Card".to_string()),
            ("description".into(), design.description.clone()),
            (
                "logo_text".into(),
                design.logo_text.clone().unwrap_or_default(),
            ),
            ("color_background".into(), design.colors.background.clone()),
            ("color_foreground".into(), design.colors.foreground.clone()),
            ("color_label".into(), design.colors.label.clone()),
            ("barcode_format".into(), design.barcode.format.name().into()),
            (
                "barcode_alt".into(),
                design.barcode.alt_text.clone().unwrap_or_default(),
            ),
        ];
        if design.barcode.show_value {
            out.push(("barcode_show".into(), "on".into()));
        }
        for a in &r.areas {
            for (i, f) in a.rows.iter().enumerate() {
                for (k, v) in [
                    ("key", &f.key),
                    ("label", &f.label),
                    ("value", &f.value),
                    ("align", &f.align),
                    ("format", &f.format),
                    ("currency", &f.currency),
                    ("change", &f.change),
                ] {
                    out.push((format!("{}.{i}.{k}", a.area), v.clone()));
                }
            }
        }
        for (i, l) in r.locations.iter().enumerate() {
            out.push((format!("loc.{i}.lat"), l.lat.clone()));
            out.push((format!("loc.{i}.lng"), l.lng.clone()));
            out.push((format!("loc.{i}.text"), l.text.clone()));
        }
        for (i, s) in r.stores.iter().enumerate() {
            out.push((format!("info.stores.{i}.name"), s.name.clone()));
            out.push((format!("info.stores.{i}.address"), s.address.clone()));
            out.push((format!("info.stores.{i}.hours"), s.hours.clone()));
        }
        for (i, o) in r.offers.iter().enumerate() {
            out.push((format!("info.offers.{i}.title"), o.title.clone()));
            out.push((format!("info.offers.{i}.text"), o.text.clone()));
        }
        out.push((
            "info.website".into(),
            design.info.website.clone().unwrap_or_default(),
        ));
        out.push((
            "info.terms".into(),
            design.info.terms.clone().unwrap_or_default(),
        ));
        if design.apple.sharing_prohibited {
            out.push(("apple.sharing_prohibited".into(), "on".into()));
        }
        out.push(("apple.store_ids".into(), r.store_ids.clone()));
        out.push((
            "apple.app_launch_url".into(),
            design.apple.app_launch_url.clone().unwrap_or_default(),
        ));
        out.push(("apple.validity_days".into(), r.validity_days.clone()));
        out.push((
            "apple.nfc_key".into(),
            design
                .apple
                .nfc_encryption_public_key
                .clone()
                .unwrap_or_default(),
        ));
        for (i, d) in r.relevant.iter().enumerate() {
            out.push((format!("apple.relevant.{i}.start"), d.start.clone()));
            out.push((format!("apple.relevant.{i}.end"), d.end.clone()));
        }
        for (k, s) in r.sources.iter().enumerate() {
            out.push((format!("tr_src.{k}"), s.clone()));
        }
        for (j, l) in r.languages.iter().enumerate() {
            out.push((format!("tr_lang.{j}"), l.tag.clone()));
            for (k, t) in l.texts.iter().enumerate() {
                out.push((format!("tr.{j}.{k}"), t.clone()));
            }
        }
        out
    }

    #[test]
    fn a_design_survives_the_form_round_trip() {
        let mut d = crate::demo::design();
        d.info.website = Some("https://coffee.example".into());
        d.info.offers.push(OfferInfo {
            title: "Double points".into(),
            text: "Every Monday".into(),
        });
        d.info.stores.push(StoreInfo {
            name: "Centraal".into(),
            address: "Stationsplein 1".into(),
            hours: "Mon-Fri 7-19".into(),
        });
        d.info.terms = Some("Be nice.".into());
        d.primary_fields[0].format = Some(ValueFormat::Number);
        d.auxiliary_fields[0].text_alignment = Some(TextAlignment::Right);
        d.barcode.alt_text = Some("No. {{member_number}}".into());
        d.apple = AppleSettings {
            sharing_prohibited: true,
            associated_store_identifiers: vec![284882215, 12],
            app_launch_url: Some("coffee://card".into()),
            relevant_dates: vec![RelevantInterval {
                start: "2026-12-24T08:00:00+01:00".into(),
                end: "2026-12-24T18:00:00+01:00".into(),
            }],
            validity_days: Some(365),
            nfc_encryption_public_key: Some("MDkw…".into()),
        };
        d.translations
            .entry("de".into())
            .or_default()
            .insert("POINTS".into(), "PUNKTE".into());
        let parsed = parse(&Submitted::new(submit(&d)));
        assert_eq!(parsed.problems, []);
        assert_eq!(parsed.design, d);
    }

    #[test]
    fn empty_rows_are_skipped_and_keys_are_made_up() {
        let pairs = vec![
            ("secondary_fields.0.key".to_string(), String::new()),
            ("secondary_fields.0.label".into(), "LEVEL".into()),
            ("secondary_fields.0.value".into(), "{{tier}}".into()),
            ("secondary_fields.1.key".into(), "kept_key".into()),
            ("secondary_fields.1.label".into(), String::new()),
            ("secondary_fields.1.value".into(), String::new()),
        ];
        let d = parse(&Submitted::new(pairs)).design;
        assert_eq!(d.secondary_fields.len(), 1);
        assert_eq!(d.secondary_fields[0].key, "secondary_0");
        assert_eq!(d.secondary_fields[0].label.as_deref(), Some("LEVEL"));
    }

    #[test]
    fn a_bad_location_is_reported_and_kept_as_typed() {
        let pairs = vec![
            ("loc.0.lat".to_string(), "52.1".to_string()),
            ("loc.0.lng".into(), "east".into()),
            ("loc.0.text".into(), "Near".into()),
        ];
        let p = parse(&Submitted::new(pairs));
        assert!(p.design.locations.is_empty());
        assert_eq!(p.raw_locations[0].lng, "east");
        assert!(
            p.problems[0]
                .message
                .contains("location 1 needs a latitude")
        );
    }
}
