use super::*;

fn field(key: &str, value: &str) -> FieldSpec {
    FieldSpec {
        key: key.into(),
        label: None,
        value: value.into(),
        change_message: None,
        text_alignment: None,
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
    };
    assert_eq!(s.fill("{{balance}}"), FieldValue::Number(1240));
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
