//! Checks a `.pkpass` as Wallet would, using the `openssl` command line for the signature:
//! flat zip, manifest hashes, detached signature with signingTime and the intermediate, signer
//! UID/OU equal to pass.json, and Apple's storeCard rules for pass.json.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sha1::{Digest, Sha1};

/// Unpacks `pkpass` into `dir` and checks everything; returns the parsed pass.json.
pub fn verify_pkpass(pkpass: &[u8], root_ca: &Path, dir: &Path) -> Value {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(pkpass)).expect("a .pkpass is a zip");
    let mut files = BTreeMap::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let name = entry.name().unwrap().to_string();
        // Flat, except one level of `xx.lproj/` localization folders (§3).
        let lproj = name
            .split_once('/')
            .is_some_and(|(d, f)| d.ends_with(".lproj") && !f.contains('/'));
        assert!(
            (!name.contains('/') || lproj) && !name.starts_with('.'),
            "no folders but xx.lproj, no hidden files: {name}"
        );
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, &bytes).unwrap();
        files.insert(name, bytes);
    }
    for required in [
        "pass.json",
        "manifest.json",
        "signature",
        "icon.png",
        "icon@2x.png",
        "icon@3x.png",
    ] {
        assert!(
            files.contains_key(required),
            "{required} missing from the bundle"
        );
    }

    // manifest.json lists every other file with its SHA-1, and nothing else.
    let manifest: BTreeMap<String, String> =
        serde_json::from_slice(&files["manifest.json"]).unwrap();
    let listed: HashSet<&str> = manifest.keys().map(String::as_str).collect();
    let present: HashSet<&str> = files
        .keys()
        .map(String::as_str)
        .filter(|n| *n != "manifest.json" && *n != "signature")
        .collect();
    assert_eq!(
        listed, present,
        "manifest must list exactly the bundle's files"
    );
    for (name, hash) in &manifest {
        let actual = data_encoding::HEXLOWER.encode(&Sha1::digest(&files[name]));
        assert_eq!(&actual, hash, "SHA-1 of {name}");
    }

    // The signature, checked by the openssl CLI against the (dev) root CA.
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ca = root_ca.to_str().unwrap();
    assert!(
        smime_verify(dir, "manifest.json", ca),
        "openssl smime -verify failed"
    );
    let cms = run(&[
        "cms",
        "-cmsout",
        "-print",
        "-inform",
        "DER",
        "-in",
        "signature",
    ]);
    assert!(cms.contains("signingTime"), "signingTime attribute missing");
    assert!(
        cms.contains("eContent: <ABSENT>"),
        "signature must be detached"
    );
    let certs = run(&[
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        "signature",
        "-print_certs",
        "-noout",
    ]);
    assert!(
        certs.matches("subject=").count() >= 2,
        "signer and intermediate must be embedded:\n{certs}"
    );

    // A changed manifest must fail verification.
    let mut tampered = files["manifest.json"].clone();
    tampered[3] ^= 1;
    std::fs::write(dir.join("tampered.json"), tampered).unwrap();
    assert!(
        !smime_verify(dir, "tampered.json", ca),
        "a tampered manifest verified"
    );

    let pass: Value = serde_json::from_slice(&files["pass.json"]).unwrap();
    // The signer certificate's UID and OU equal passTypeIdentifier and teamIdentifier.
    let ptid = pass["passTypeIdentifier"].as_str().unwrap();
    let team = pass["teamIdentifier"].as_str().unwrap();
    let signer_line = certs
        .lines()
        .find(|l| l.starts_with("subject=") && l.contains("UID"))
        .unwrap_or_else(|| panic!("no certificate with a UID:\n{certs}"));
    assert!(
        signer_line.contains(&format!("UID = {ptid}")),
        "{signer_line}"
    );
    assert!(
        signer_line.contains(&format!("OU = {team}")),
        "{signer_line}"
    );
    check_store_card_rules(&pass);
    pass
}

/// `openssl smime -verify` of the detached `signature` over `content`, as the spec gives it.
fn smime_verify(dir: &Path, content: &str, ca: &str) -> bool {
    let args = [
        "smime",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        "signature",
        "-content",
    ];
    Command::new("openssl")
        .args(args)
        .args([content, "-CAfile", ca, "-out", "/dev/null"])
        .current_dir(dir)
        .output()
        .expect("openssl CLI")
        .status
        .success()
}

/// Apple's rules for a storeCard `pass.json` (`shared/spec/apple-wallet.md` §4).
pub fn check_store_card_rules(pass: &Value) {
    assert_eq!(pass["formatVersion"], 1);
    for key in [
        "passTypeIdentifier",
        "teamIdentifier",
        "serialNumber",
        "organizationName",
        "description",
    ] {
        assert!(
            pass[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key} is required"
        );
    }
    assert!(
        pass["passTypeIdentifier"]
            .as_str()
            .unwrap()
            .starts_with("pass.")
    );
    for style in ["boardingPass", "coupon", "eventTicket", "generic"] {
        assert!(pass.get(style).is_none(), "exactly one style key");
    }
    let card = pass["storeCard"].as_object().expect("storeCard");
    let count = |k: &str| card.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    assert!(count("headerFields") <= 3 && count("primaryFields") <= 1);
    assert!(count("secondaryFields") + count("auxiliaryFields") <= 4);
    let mut keys = HashSet::new();
    for area in [
        "headerFields",
        "primaryFields",
        "secondaryFields",
        "auxiliaryFields",
        "backFields",
    ] {
        for f in card
            .get(area)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = f["key"].as_str().expect("field key");
            assert!(keys.insert(key.to_string()), "duplicate key {key}");
            assert!(
                f.get("value")
                    .is_some_and(|v| v.is_string() || v.is_number()),
                "{key} value"
            );
            if let Some(m) = f.get("changeMessage") {
                assert!(
                    m.as_str().unwrap().contains("%@"),
                    "{key} changeMessage needs %@"
                );
            }
            if area == "primaryFields" || area == "backFields" {
                assert!(f.get("textAlignment").is_none());
            }
        }
    }
    for c in ["backgroundColor", "foregroundColor", "labelColor"] {
        let v = pass[c].as_str().unwrap();
        assert!(
            v.starts_with("rgb(") && v.ends_with(')'),
            "{c} must be rgb(): {v}"
        );
    }
    match (pass.get("webServiceURL"), pass.get("authenticationToken")) {
        (Some(url), Some(token)) => {
            let url = url.as_str().unwrap();
            assert!(!url.ends_with("/v1") && !url.ends_with('/'), "{url}");
            assert!(
                token.as_str().unwrap().len() >= 16,
                "authenticationToken at least 16 characters"
            );
        }
        (None, None) => {}
        _ => panic!("webServiceURL and authenticationToken go together"),
    }
    let formats = [
        "PKBarcodeFormatQR",
        "PKBarcodeFormatPDF417",
        "PKBarcodeFormatAztec",
        "PKBarcodeFormatCode128",
    ];
    // A void card carries no barcode (it is scanned nowhere); a live one always does.
    if pass["voided"] != true {
        assert!(pass["barcodes"].is_array(), "barcodes");
    }
    for b in pass["barcodes"].as_array().into_iter().flatten() {
        assert!(formats.contains(&b["format"].as_str().unwrap()));
        assert!(b["messageEncoding"].is_string() && b["message"].is_string());
    }
    assert!(
        pass.get("relevantDate").is_none(),
        "relevantDate is not supported on storeCard"
    );
    assert!(
        pass.get("locations")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
            <= 10
    );
    // Apple's Pass reference: the store card keys' types and their dependencies.
    if let Some(v) = pass.get("sharingProhibited") {
        assert!(v.is_boolean());
    }
    if let Some(ids) = pass.get("associatedStoreIdentifiers") {
        assert!(ids.as_array().unwrap().iter().all(Value::is_u64), "{ids}");
    }
    if let Some(url) = pass.get("appLaunchURL") {
        assert!(url.as_str().unwrap().contains("://"));
        assert!(
            pass.get("associatedStoreIdentifiers").is_some(),
            "appLaunchURL needs associatedStoreIdentifiers"
        );
    }
    for d in pass
        .get("relevantDates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for k in ["startDate", "endDate"] {
            let t = d[k].as_str().unwrap();
            assert!(t.len() >= 16 && t.as_bytes()[10] == b'T', "{k}: {t}");
        }
    }
    if let Some(nfc) = pass.get("nfc") {
        assert!(nfc["message"].as_str().unwrap().len() <= 64);
        assert!(nfc["encryptionPublicKey"].is_string());
    }
}

/// A template with every store-card key Apple documents, issued through the API: the pass is
/// signed, verifies with the `openssl` CLI and carries the keys.
#[tokio::test]
async fn a_pass_with_the_store_card_keys_verifies() {
    use crate::helpers::{TestApp, TestDb, program_body, template_body};
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let (s, program) = app.post("/api/v1/programs", program_body("coffee")).await;
    assert_eq!(s, 201, "{program}");
    let pid = program["id"].as_str().unwrap();
    let mut template = template_body();
    template["design"]["apple"] = serde_json::json!({
        "sharing_prohibited": true,
        "associated_store_identifiers": [284882215],
        "app_launch_url": "coffee://card",
        "relevant_dates": [{"start": "2026-12-24T08:00:00+01:00", "end": "2026-12-24T18:00:00+01:00"}],
        "validity_days": 365,
        "nfc_encryption_public_key": "MDkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDIgACAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
    });
    let (s, t) = app
        .post(
            &format!("/api/v1/programs/{pid}/templates"),
            template.clone(),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let (s, member) = app
        .post(
            &format!("/api/v1/programs/{pid}/members"),
            serde_json::json!({"display_name": "Ada Lovelace"}),
        )
        .await;
    assert_eq!(s, 201, "{member}");
    let r = app.member_pass(&member).await;
    assert_eq!(r.status(), 200);
    let dir = tempfile::tempdir().unwrap();
    let pass = verify_pkpass(&r.bytes().await.unwrap(), &app.root_ca(), dir.path());
    assert_eq!(pass["sharingProhibited"], true);
    assert_eq!(
        pass["associatedStoreIdentifiers"],
        serde_json::json!([284882215])
    );
    assert_eq!(pass["appLaunchURL"], "coffee://card");
    assert_eq!(
        pass["relevantDates"][0]["startDate"],
        "2026-12-24T08:00:00+01:00"
    );
    assert!(pass["expirationDate"].as_str().unwrap().ends_with('Z'));
    assert_eq!(pass["nfc"]["message"], member["barcode"]);

    // An app URL without the app it opens is refused, naming the key.
    template["design"]["apple"] = serde_json::json!({"app_launch_url": "coffee://card"});
    let (s, refused) = app
        .post(&format!("/api/v1/programs/{pid}/templates"), template)
        .await;
    assert_eq!(s, 400, "{refused}");
    assert!(
        refused.to_string().contains("associated_store_identifiers"),
        "{refused}"
    );
}

/// A voided pass with an expiration date, signed with a throwaway CA and checked with the
/// `openssl` CLI like every pass.
#[test]
fn a_voided_and_expiring_pass_is_signed_and_verifies() {
    use tessera::domain::{CardState, Member, Pass, Program, Template};
    use tessera::passes::apple::{bundle, dev_certs::DevAuthority, images, pass_json};

    let dir = tempfile::tempdir().unwrap();
    let ca = DevAuthority::open_or_create(dir.path()).unwrap();
    let identity = ca
        .identity("pass.com.example.coffee", "ABCDE12345")
        .unwrap();
    let program = Program {
        id: "p1".into(),
        slug: "coffee".into(),
        name: "Example Coffee".into(),
        pass_type_identifier: "pass.com.example.coffee".into(),
        team_identifier: "ABCDE12345".into(),
        organization_name: "Example Coffee Ltd".into(),
        rules: tessera::demo::rules(),
        created_at: 0,
    };
    let template = Template {
        id: "t1".into(),
        program_id: "p1".into(),
        name: "Default".into(),
        version: 1,
        design: tessera::demo::design().validate().unwrap(),
        updated_at: 0,
    };
    let member = Member {
        id: "m1".into(),
        program_id: "p1".into(),
        display_name: "Ada Lovelace".into(),
        external_id: None,
        barcode: "RE53ZYGHVFO34H3IQMD42ST3UQ".into(),
        points: 60,
        tier: None,
        created_at: 0,
    };
    let pass = Pass {
        serial_number: "2kg2ar5agz77wdrlchpyrjbscq".into(),
        member_id: "m1".into(),
        template_id: "t1".into(),
        pass_type_identifier: "pass.com.example.coffee".into(),
        authentication_token: "ew6ugopudgfxt6e5elqupzm3lbg5wd6cajgsnd5a23xo7b2mddua".into(),
        created_at: 0,
        updated_at: 0,
        last_fetched_at: None,
        download_token: "d".into(),
        ended_at: None,
    };
    let json = pass_json::render(&pass_json::PassContent {
        program: &program,
        template: &template,
        member: &member,
        pass: &pass,
        web_service_url: "https://passes.example.com/passkit",
        standing: Default::default(),
        state: CardState::Inactive,
        expires_at: Some(1_798_718_400_000),
        account_url: None,
    });
    let mut files = Vec::new();
    for (kind, bytes) in tessera::demo::images() {
        files.extend(images::process(kind, &bytes).unwrap());
    }
    let assets = bundle::PreparedAssets::new(1, files);
    let pkpass = bundle::build(&json, &assets, &identity).unwrap();
    let out = tempfile::tempdir().unwrap();
    let pass = verify_pkpass(&pkpass, &ca.root_ca_path(), out.path());
    check_store_card_rules(&pass);
    assert_eq!(pass["voided"], true);
    assert_eq!(pass["expirationDate"], "2026-12-31T12:00:00Z");
    let keys: Vec<&str> = pass["storeCard"]["auxiliaryFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["key"].as_str())
        .collect();
    assert!(
        !keys.contains(&"number"),
        "no external id: no empty row, {keys:?}"
    );
}

/// A template's validity counts from the card's issue (its pass row's `created_at`, the card's
/// generation), never from when the pass is signed: a pass signed again after a change keeps
/// its `expirationDate` to the second.
#[tokio::test]
async fn a_validity_counts_from_the_cards_issue_and_survives_re_signing() {
    use crate::helpers::{TestApp, TestDb, program_body, template_body};
    let app = TestApp::spawn(TestDb::sqlite().await).await;
    let (s, program) = app.post("/api/v1/programs", program_body("coffee")).await;
    assert_eq!(s, 201, "{program}");
    let mut body = template_body();
    body["design"]["apple"] = serde_json::json!({"validity_days": 30});
    let pid = program["id"].as_str().unwrap();
    let (s, t) = app
        .post(&format!("/api/v1/programs/{pid}/templates"), body)
        .await;
    assert_eq!(s, 201, "{t}");
    let (s, member) = app
        .post(
            &format!("/api/v1/programs/{pid}/members"),
            serde_json::json!({"display_name": "Ada Lovelace"}),
        )
        .await;
    assert_eq!(s, 201, "{member}");
    let id = member["id"].as_str().unwrap();
    let issued = app.state.store.pass_for_member(id).await.unwrap();
    let expiry = |pass: &Value| {
        time::OffsetDateTime::parse(
            pass["expirationDate"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp()
    };
    let download = || async {
        let dir = tempfile::tempdir().unwrap();
        let bytes = app.member_pass(&member).await.bytes().await.unwrap();
        verify_pkpass(&bytes, &app.root_ca(), dir.path())
    };
    let first = download().await;
    assert_eq!(
        expiry(&first),
        (issued.created_at + 30 * 86_400_000) / 1000,
        "30 days from the card's issue"
    );

    let (s, _) = app
        .post_idem(
            &format!("/api/v1/members/{id}/transactions"),
            "earn-1",
            serde_json::json!({"type": "earn", "points": 40}),
        )
        .await;
    assert_eq!(s, 201);
    let after = app.state.store.pass_for_member(id).await.unwrap();
    assert!(
        after.updated_at > issued.updated_at,
        "the change is a new version"
    );
    let second = download().await;
    assert_eq!(second["storeCard"]["primaryFields"][0]["value"], 40);
    assert_eq!(
        expiry(&second),
        expiry(&first),
        "re-signing moves no expiry"
    );
}
