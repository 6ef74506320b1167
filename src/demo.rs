//! The demo program, template and member: `tessera demo` and `tessera serve --demo`.
//! Seeding is idempotent: a second run finds what the first made.

use serde::Serialize;

use crate::app::AppState;
use crate::domain::template::{BarcodeSpec, Colors, Location};
use crate::domain::{BarcodeFormat, FieldSpec, NewMember, NewProgram, TemplateDesign, now_ms};
use crate::ledger::{EarnRule, LoyaltyRules, Operation, Origin, Tier, TierBasis, TierRules};
use crate::passes::apple::images::{ImageKind, sample_png};
use crate::service::cards::ServiceError;

const SLUG: &str = "demo";
const MEMBER_EXTERNAL_ID: &str = "demo-member-1";
const DEMO_POINTS: i64 = 1240;

#[derive(Debug, Serialize)]
pub struct DemoCard {
    pub program_id: String,
    pub member_id: String,
    pub serial: String,
    pub auth_token: String,
    pub pass_type_identifier: String,
    pub pass_url: String,
    /// The demo program's public join page.
    pub join_url: String,
    /// The cashier page (staff with the cashier or admin role).
    pub scan_url: String,
    /// "Add to Google Wallet", when Google Wallet is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub google_save_url: Option<String>,
}

fn field(key: &str, label: &str, value: &str) -> FieldSpec {
    FieldSpec {
        key: key.into(),
        label: Some(label.into()),
        value: value.into(),
        change_message: None,
        text_alignment: None,
        ..FieldSpec::default()
    }
}

/// A complete storeCard design showing every placeholder; also the benchmark's and tests' fixture.
pub fn design() -> TemplateDesign {
    let mut points = field("points", "POINTS", "{{balance}}");
    points.change_message = Some("You now have %@ points".into());
    TemplateDesign {
        description: "Tessera Coffee loyalty card".into(),
        logo_text: Some("Tessera Coffee".into()),
        colors: Colors {
            background: "#3c414c".into(),
            foreground: "#ffffff".into(),
            label: "#c8c8c8".into(),
        },
        header_fields: vec![{
            let mut tier = field("tier", "TIER", "{{tier}}");
            tier.change_message = Some("You are now %@".into());
            tier
        }],
        primary_fields: vec![points],
        secondary_fields: vec![field("member", "MEMBER", "{{member_name}}")],
        auxiliary_fields: vec![field("number", "NUMBER", "{{external_id}}")],
        back_fields: vec![field(
            "terms",
            "Terms",
            "Points are worth nothing but warm feelings. Card {{barcode}}.",
        )],
        barcode: BarcodeSpec {
            format: BarcodeFormat::Qr,
            show_value: true,
            alt_text: None,
        },
        locations: vec![Location {
            latitude: 52.3731,
            longitude: 4.8922,
            relevant_text: Some("Coffee is near".into()),
        }],
        info: Default::default(),
        translations: Default::default(),
        apple: Default::default(),
    }
}

/// The demo's rules: 1 point per 100 minor units, points lapse after a year, three tiers.
pub fn rules() -> LoyaltyRules {
    let tier = |name: &str, threshold, multiplier_milli| Tier {
        id: name.to_lowercase(),
        name: name.into(),
        threshold,
        multiplier_milli,
    };
    LoyaltyRules {
        earn: EarnRule {
            points: 1,
            per_minor: 100,
        },
        expiry_days: Some(365),
        tiers: TierRules {
            basis: TierBasis::Points,
            window_days: 365,
            levels: vec![
                tier("Bronze", 0, 1000),
                tier("Silver", 500, 1200),
                tier("Gold", 2000, 1500),
            ],
        },
    }
}

/// Demo uploads, larger than Wallet's @3x sizes so resizing is exercised.
pub fn images() -> Vec<(ImageKind, Vec<u8>)> {
    vec![
        (ImageKind::Icon, sample_png(180, 180, [60, 65, 76])),
        (ImageKind::Logo, sample_png(480, 150, [200, 120, 40])),
        (ImageKind::Strip, sample_png(1125, 432, [90, 60, 40])),
    ]
}

/// Finds or creates the demo program, its template and a member with some points.
pub async fn seed(state: &AppState) -> Result<DemoCard, ServiceError> {
    let store = &state.store;
    let program = match store.find_program_by_slug(SLUG).await? {
        Some(p) => p,
        None => {
            let (ptid, team) = state.cards.signers().default_identifiers();
            let new = NewProgram {
                slug: SLUG.into(),
                name: "Tessera Coffee".into(),
                pass_type_identifier: ptid,
                team_identifier: team,
                organization_name: "Tessera Coffee".into(),
                rules: rules(),
            };
            new.validate()?;
            let program = store.insert_program(&new).await?;
            // The demo's join page is open: a placeholder policy and a welcome bonus.
            let enrollment = crate::domain::enrollment::EnrollmentSettings {
                privacy_policy_url: Some("https://example.com/privacy".into()),
                welcome_bonus: 50,
                ..Default::default()
            };
            store
                .set_program_enrollment(&program.id, &enrollment)
                .await?;
            program
        }
    };
    if store.latest_template(&program.id).await?.is_none() {
        state
            .cards
            .create_template(&program.id, "Demo card", design(), images())
            .await?;
    }
    let member = match store
        .find_member_by_external_id(&program.id, MEMBER_EXTERNAL_ID)
        .await?
    {
        Some(m) => m,
        None => {
            let new = NewMember {
                display_name: "Ada Lovelace".into(),
                external_id: Some(MEMBER_EXTERNAL_ID.into()),
            };
            let (member, _) = state.cards.create_member(&program, &new).await?;
            let welcome = Operation::EarnPoints {
                points: DEMO_POINTS,
            };
            let origin = Origin {
                channel: Some("demo".into()),
                ..Origin::default()
            };
            store
                .post(&member.id, &welcome, &origin, None, None, now_ms())
                .await?;
            store.get_member(&member.id).await?
        }
    };
    let pass = store.pass_for_member(&member.id).await?;
    // With Google Wallet configured: write the member's object now and hand out its link. A
    // Google outage does not stop the demo; the sync worker writes the object later.
    let google_save_url = match &state.google {
        Some(google) => match google
            .save_link(store, &member.id, state.config.public_base())
            .await
        {
            Ok((_, url)) => Some(url),
            Err(e) => {
                tracing::warn!(error = %e, "demo: no Google Wallet link this time");
                None
            }
        },
        None => None,
    };
    let base = state.config.public_base();
    Ok(DemoCard {
        join_url: format!("{base}/join/{}", program.slug),
        scan_url: format!("{base}/scan"),
        google_save_url,
        program_id: program.id,
        member_id: member.id,
        pass_url: state.pass_url(&pass),
        serial: pass.serial_number,
        auth_token: pass.authentication_token,
        pass_type_identifier: pass.pass_type_identifier,
    })
}
