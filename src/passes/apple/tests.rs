//! Snapshot and signature tests for the pass bundle, with a fixed template and member.

use std::io::Read;

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;

use super::bundle::{self, PreparedAssets};
use super::dev_certs::DevAuthority;
use super::images;
use super::pass_json::{self, PassContent};
use crate::domain::{Member, Pass, Program, Template};

fn fixture() -> (Program, Template, Member, Pass) {
    let program = Program {
        id: "p1".into(),
        slug: "coffee".into(),
        name: "Tessera Coffee".into(),
        pass_type_identifier: "pass.com.example.loyalty".into(),
        team_identifier: "ABCDE12345".into(),
        organization_name: "Example Coffee".into(),
        rules: crate::demo::rules(),
        created_at: 0,
    };
    let template = Template {
        id: "t1".into(),
        program_id: "p1".into(),
        name: "Default".into(),
        version: 3,
        design: crate::demo::design().validate().unwrap(),
        updated_at: 0,
    };
    let member = Member {
        id: "m1".into(),
        program_id: "p1".into(),
        display_name: "Ada \"Countess\" Lovelace".into(),
        external_id: Some("crm-42".into()),
        barcode: "RE53ZYGHVFO34H3IQMD42ST3UQ".into(),
        points: 1240,
        // Members hold the tier's id; the card shows its name.
        tier: Some("gold".into()),
        created_at: 0,
    };
    let pass = Pass {
        serial_number: "2kg2ar5agz77wdrlchpyrjbscq".into(),
        member_id: "m1".into(),
        template_id: "t1".into(),
        pass_type_identifier: "pass.com.example.loyalty".into(),
        authentication_token: "ew6ugopudgfxt6e5elqupzm3lbg5wd6cajgsnd5a23xo7b2mddua".into(),
        created_at: 0,
        updated_at: 0,
        last_fetched_at: None,
        download_token: "d".into(),
        ended_at: None,
    };
    (program, template, member, pass)
}

fn assets() -> PreparedAssets {
    let mut files = Vec::new();
    for (kind, bytes) in crate::demo::images() {
        files.extend(images::process(kind, &bytes).unwrap());
    }
    files.push((".DS_Store".into(), b"junk".to_vec()));
    PreparedAssets::new(3, files)
}

fn render() -> Vec<u8> {
    let (program, template, member, pass) = fixture();
    pass_json::render(&PassContent {
        program: &program,
        template: &template,
        member: &member,
        pass: &pass,
        web_service_url: "https://passes.example.com/passkit",
        standing: Default::default(),
        state: crate::domain::CardState::Active,
        expires_at: None,
        account_url: None,
    })
}

fn pretty(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn pass_json_snapshot() {
    insta::assert_snapshot!("pass_json", pretty(&render()));
}

#[test]
fn manifest_snapshot_lists_every_file_but_hidden_ones() {
    let assets = assets();
    assert!(!assets.contains(".DS_Store"));
    insta::assert_snapshot!(
        "manifest_json",
        pretty(&bundle::manifest(&render(), &assets))
    );
}

#[test]
fn bundle_is_flat_signed_and_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevAuthority::open_or_create(dir.path()).unwrap();
    let identity = ca
        .identity("pass.com.example.loyalty", "ABCDE12345")
        .unwrap();
    let json = render();
    let zip_bytes = bundle::build(&json, &assets(), &identity).unwrap();

    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
    names.sort();
    assert!(
        names
            .iter()
            .all(|n| !n.contains('/') && !n.starts_with('.')),
        "{names:?}"
    );
    assert!(names.contains(&"icon@3x.png".to_string()) && names.contains(&"signature".to_string()));
    let mut read = |name: &str| {
        let mut buf = Vec::new();
        zip.by_name(name).unwrap().read_to_end(&mut buf).unwrap();
        buf
    };
    let manifest = read("manifest.json");
    let signature = read("signature");
    assert_eq!(read("pass.json"), json);

    let pkcs7 = Pkcs7::from_der(&signature).unwrap();
    let root = openssl::x509::X509::from_pem(&std::fs::read(ca.root_ca_path()).unwrap()).unwrap();
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(root).unwrap();
    let store = store.build();
    let certs = Stack::new().unwrap();
    pkcs7
        .verify(&certs, &store, Some(&manifest), None, Pkcs7Flags::BINARY)
        .unwrap();
    // A manifest changed by one byte must not verify.
    let mut tampered = manifest.clone();
    tampered[5] ^= 1;
    assert!(
        pkcs7
            .verify(&certs, &store, Some(&tampered), None, Pkcs7Flags::BINARY)
            .is_err()
    );
}

#[test]
fn configured_identity_refuses_other_pass_types_and_reads_legacy_pkcs12() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevAuthority::open_or_create(dir.path()).unwrap();
    let cert = ca
        .write_pass_certificate("pass.com.example.loyalty", "ABCDE12345")
        .unwrap();
    let key = dir.path().join(super::dev_certs::PASS_KEY_FILE);
    let wwdr = dir.path().join(super::dev_certs::INTERMEDIATE_FILE);
    let pem = super::SigningIdentity::from_pem_files(&cert, &key, &wwdr).unwrap();
    assert_eq!(pem.pass_type_identifier(), "pass.com.example.loyalty");
    assert_eq!(pem.team_identifier(), "ABCDE12345");
    let err = pem
        .check_matches("pass.com.other", "ABCDE12345")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not match the signing certificate"),
        "{err}"
    );

    // A Keychain-style export: RC2-40 encryption, which OpenSSL 3 reads only with the legacy provider.
    let p12 = dir.path().join("legacy.p12");
    let status = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-legacy",
            "-passout",
            "pass:s3cret",
            "-in",
        ])
        .arg(&cert)
        .arg("-inkey")
        .arg(&key)
        .arg("-out")
        .arg(&p12)
        .status()
        .unwrap();
    assert!(status.success());
    let from_p12 = super::SigningIdentity::from_pkcs12_file(&p12, "s3cret", &wwdr).unwrap();
    assert_eq!(from_p12.pass_type_identifier(), "pass.com.example.loyalty");
    let wrong = super::SigningIdentity::from_pkcs12_file(&p12, "nope", &wwdr)
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("wrong password"), "{wrong}");
}

#[test]
fn a_field_whose_value_renders_empty_is_left_out() {
    let (program, template, mut member, pass) = fixture();
    let render_keys = |member: &Member| {
        let bytes = pass_json::render(&PassContent {
            program: &program,
            template: &template,
            member,
            pass: &pass,
            web_service_url: "https://passes.example.com/passkit",
            standing: Default::default(),
            state: crate::domain::CardState::Active,
            expires_at: None,
            account_url: None,
        });
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["storeCard"]["auxiliaryFields"]
            .as_array()
            .map(|a| a.iter().map(|f| f["key"].to_string()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert!(render_keys(&member).contains(&"\"number\"".to_string()));
    // The demo's "number" field shows `{{external_id}}`: a member without one has no such row.
    member.external_id = None;
    assert!(!render_keys(&member).contains(&"\"number\"".to_string()));
}

fn render_in(state: crate::domain::CardState, expires_at: Option<i64>) -> serde_json::Value {
    let (program, template, member, pass) = fixture();
    let bytes = pass_json::render(&PassContent {
        program: &program,
        template: &template,
        member: &member,
        pass: &pass,
        web_service_url: "https://passes.example.com/passkit",
        standing: Default::default(),
        state,
        expires_at,
        account_url: None,
    });
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn an_ended_card_is_voided_and_a_validity_is_an_expiration_date() {
    use crate::domain::CardState;
    let active = render_in(CardState::Active, None);
    assert!(active.get("voided").is_none() && active.get("expirationDate").is_none());
    let voided = render_in(CardState::Inactive, None);
    assert_eq!(voided["voided"], true);
    // 2026-12-31 12:00 UTC: Wallet reads a W3C date.
    let expiring = render_in(CardState::Active, Some(1_798_718_400_000));
    assert_eq!(expiring["expirationDate"], "2026-12-31T12:00:00Z");
    assert!(expiring.get("voided").is_none());
    insta::assert_snapshot!(
        "pass_json_voided",
        serde_json::to_string_pretty(&voided).unwrap()
    );
    insta::assert_snapshot!(
        "pass_json_expiring",
        serde_json::to_string_pretty(&expiring).unwrap()
    );
}

#[test]
fn the_store_card_keys_of_a_template_reach_pass_json() {
    use crate::domain::template::apple::{AppleSettings, RelevantInterval};
    let (program, mut template, member, mut pass) = fixture();
    template.design.apple = AppleSettings {
        sharing_prohibited: true,
        associated_store_identifiers: vec![284882215],
        app_launch_url: Some("coffee://card/open".into()),
        relevant_dates: vec![RelevantInterval {
            start: "2026-12-24T08:00:00+01:00".into(),
            end: "2026-12-24T18:00:00+01:00".into(),
        }],
        validity_days: Some(365),
        nfc_encryption_public_key: Some(
            "MDkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDIgACAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
                .into(),
        ),
    };
    template.design = template.design.validate().unwrap();
    // Issued 2026-01-01 00:00 UTC: valid for 365 days.
    pass.created_at = 1_767_225_600_000;
    let render = |expires_at| {
        let bytes = pass_json::render(&PassContent {
            program: &program,
            template: &template,
            member: &member,
            pass: &pass,
            web_service_url: "https://passes.example.com/passkit",
            standing: Default::default(),
            state: crate::domain::CardState::Active,
            expires_at,
            account_url: None,
        });
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
    };
    let json = render(None);
    assert_eq!(json["expirationDate"], "2027-01-01T00:00:00Z");
    assert_eq!(json["nfc"]["message"], member.barcode);
    insta::assert_snapshot!(
        "pass_json_store_card_keys",
        serde_json::to_string_pretty(&json).unwrap()
    );
    // The card's own end wins over the template's validity.
    assert_eq!(
        render(Some(1_798_718_400_000))["expirationDate"],
        "2026-12-31T12:00:00Z"
    );
    let plain = serde_json::to_string(&render_in(crate::domain::CardState::Active, None)).unwrap();
    for key in [
        "sharingProhibited",
        "associatedStoreIdentifiers",
        "appLaunchURL",
        "relevantDates",
        "nfc",
    ] {
        assert!(!plain.contains(key), "{key} only when the template sets it");
    }
}

#[test]
fn relevant_dates_are_written_without_fractional_seconds() {
    use super::pass_json::w3c_written;
    assert_eq!(
        w3c_written("2026-12-24T08:00:00.500Z").as_deref(),
        Some("2026-12-24T08:00:00+00:00")
    );
    assert_eq!(
        w3c_written("2026-12-24T08:00+01:00").as_deref(),
        Some("2026-12-24T08:00:00+01:00")
    );
    assert_eq!(w3c_written("24 December"), None);
}
