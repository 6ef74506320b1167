use super::*;

fn field(key: &str, value: &str) -> FieldSpec {
    FieldSpec {
        key: key.into(),
        label: None,
        value: value.into(),
        change_message: None,
        text_alignment: None,
        ..FieldSpec::default()
    }
}

fn design() -> TemplateDesign {
    TemplateDesign {
        description: "Card".into(),
        logo_text: None,
        colors: Colors {
            background: "#3c414c".into(),
            foreground: "#fff".into(),
            label: "rgb(1,2,3)".into(),
        },
        header_fields: vec![],
        primary_fields: vec![field("points", "{{balance}}")],
        secondary_fields: vec![field("name", "{{member_name}}")],
        auxiliary_fields: vec![],
        back_fields: vec![],
        barcode: BarcodeSpec::default(),
        locations: vec![],
        info: Default::default(),
        translations: Default::default(),
        apple: Default::default(),
    }
}

fn messages(d: TemplateDesign) -> String {
    d.validate().unwrap_err().to_string()
}

#[test]
fn a_good_design_normalises_colours() {
    let d = design().validate().unwrap();
    assert_eq!(d.colors.background, "rgb(60, 65, 76)");
    assert_eq!(d.colors.foreground, "rgb(255, 255, 255)");
    assert_eq!(d.colors.label, "rgb(1, 2, 3)");
}

#[test]
fn each_rule_names_its_problem() {
    let mut d = design();
    d.colors.background = "blue".into();
    assert!(messages(d).contains("colors.background must be a colour"));

    let mut d = design();
    d.secondary_fields = (0..3).map(|i| field(&format!("s{i}"), "x")).collect();
    d.auxiliary_fields = (0..2).map(|i| field(&format!("a{i}"), "x")).collect();
    assert!(
        messages(d).contains("a storeCard may have at most 4 secondary+auxiliary fields, got 5")
    );

    let mut d = design();
    d.primary_fields.push(field("p2", "x"));
    assert!(messages(d).contains("at most 1 primary fields"));

    let mut d = design();
    d.back_fields.push(field("points", "again"));
    assert!(messages(d).contains("\"points\" is used twice"));

    let mut d = design();
    d.primary_fields[0].change_message = Some("You now have points".into());
    assert!(messages(d).contains("must contain %@"));

    let mut d = design();
    d.back_fields.push(field("t", "{{nope}}"));
    assert!(messages(d).contains("unknown placeholder {{nope}}"));

    let mut d = design();
    d.primary_fields[0].text_alignment = Some(TextAlignment::Left);
    assert!(messages(d).contains("text_alignment is not allowed on primary_fields"));

    let mut d = design();
    d.locations = (0..11)
        .map(|_| Location {
            latitude: 1.0,
            longitude: 2.0,
            relevant_text: None,
        })
        .collect();
    assert!(messages(d).contains("at most 10 locations"));
}

#[test]
fn placeholders_fill() {
    let s = Substitutions {
        balance: 1240,
        tier: "Gold",
        member_name: "Ada",
        external_id: "crm-1",
        barcode: "ABC",
        program_name: "Coffee",
        standing: Standing {
            next_tier: "Platinum",
            points_to_next_tier: 760,
            // 2027-01-31T10:00:00Z
            next_expiry: Some((1_801_389_600_000, 40)),
            held: 240,
        },
    };
    assert_eq!(s.fill("{{available}}"), FieldValue::Number(1000));
    assert_eq!(
        s.fill("{{available}} of {{balance}} available"),
        FieldValue::Text("1000 of 1240 available".into())
    );
    assert_eq!(s.fill("{{balance}}"), FieldValue::Number(1240));
    assert_eq!(s.fill("{{points_to_next_tier}}"), FieldValue::Number(760));
    assert_eq!(s.fill("{{next_expiry_points}}"), FieldValue::Number(40));
    assert_eq!(
        s.fill("{{next_tier}} in {{points_to_next_tier}}; {{member_number}}"),
        FieldValue::Text("Platinum in 760; crm-1".into())
    );
    assert_eq!(
        s.fill("{{next_expiry_date}}"),
        FieldValue::Text("2027-01-31T00:00:00Z".into())
    );
    let no_number = Substitutions {
        external_id: "",
        standing: Standing::default(),
        ..s
    };
    assert_eq!(
        no_number.fill("{{member_number}}|{{next_expiry_date}}"),
        FieldValue::Text("ABC|".into()),
        "the barcode stands in for a missing member number; no expiry is empty"
    );
    assert_eq!(
        s.fill("{{tier}} member"),
        FieldValue::Text("Gold member".into())
    );
    assert_eq!(
        s.fill("Hi {{member_name}}, {{balance}} pts"),
        FieldValue::Text("Hi Ada, 1240 pts".into())
    );
    assert_eq!(
        s.fill("{{program_name}} / {{ external_id }} {{"),
        FieldValue::Text("Coffee / crm-1 {{".into())
    );
}

#[test]
fn formats_and_back_information_are_checked() {
    let mut d = design();
    d.primary_fields[0].format = Some(ValueFormat::Currency);
    assert!(messages(d).contains("needs a 3-letter ISO 4217 code"));
    let mut d = design();
    d.info.website = Some("coffee.example".into());
    d.info.support_email = Some("nobody".into());
    d.info.offers.push(info::OfferInfo::default());
    let m = messages(d);
    assert!(m.contains("the website must be an https://"), "{m}");
    assert!(m.contains("the support e-mail must look like"), "{m}");
    assert!(m.contains("offer 1 needs a title"), "{m}");
    let mut d = design();
    d.back_fields = (0..19).map(|i| field(&format!("b{i}"), "x")).collect();
    d.info.terms = Some("t".into());
    d.info.website = Some("https://coffee.example".into());
    assert!(messages(d).contains("at most 20 back fields, got 21"));
    let mut d = design();
    d.back_fields = vec![field("info_terms", "x")];
    d.info.terms = Some("t".into());
    assert!(
        messages(d).contains("\"info_terms\" is used by the back-of-card information"),
        "a designer's own key never clashes with a generated one silently"
    );
}

#[test]
fn back_information_becomes_back_fields_in_order() {
    let mut d = design();
    d.back_fields = vec![field("own", "mine")];
    d.info.offers.push(info::OfferInfo {
        title: "2 for 1".into(),
        text: "Tuesdays".into(),
    });
    d.info.stores.push(info::StoreInfo {
        name: "Centraal".into(),
        address: "Stationsplein 1".into(),
        hours: "Mon-Fri 7-19".into(),
    });
    d.info.support_phone = Some("+31 20 123 4567".into());
    d.info.terms = Some("Be nice".into());
    let keys: Vec<_> = d
        .back_fields_all()
        .into_iter()
        .map(|f| (f.key, f.value))
        .collect();
    assert_eq!(
        keys,
        [
            ("info_offer_0".to_string(), "Tuesdays".to_string()),
            ("own".into(), "mine".into()),
            (
                "info_store_0".into(),
                "Stationsplein 1\nMon-Fri 7-19".into()
            ),
            ("info_support_phone".into(), "tel:+31201234567".into()),
            ("info_terms".into(), "Be nice".into()),
        ]
    );
}

#[test]
fn the_balance_field_gets_a_change_message_by_default() {
    let d = design().validate().unwrap();
    assert_eq!(
        d.primary_fields[0].change_message.as_deref(),
        Some(DEFAULT_BALANCE_MESSAGE)
    );
    assert_eq!(
        d.secondary_fields[0].change_message, None,
        "other fields update silently"
    );
    let mut custom = design();
    custom.primary_fields[0].change_message = Some("Balance: %@".into());
    assert_eq!(
        custom.validate().unwrap().primary_fields[0]
            .change_message
            .as_deref(),
        Some("Balance: %@")
    );
}
