//! Response bodies of the API, typed so the OpenAPI document describes exactly what is sent.

use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::{Member, Pass, Program, Template, TemplateDesign};
use crate::ledger::{Entry, LoyaltyRules, Outcome, TierBasis};

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `validation_failed`, `insufficient_points`.
    pub code: String,
    /// What went wrong, naming the field or limit.
    pub message: String,
    /// `null`; per-field problems (`[{"field", "message"}]`, with `validation_failed`); or
    /// facts about the refusal such as `{"available": 120}` (with `insufficient_points`).
    #[schema(schema_with = error_details)]
    pub details: serde_json::Value,
}

/// What `details` may be, exactly: null, an array of field problems, or an object.
fn error_details() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
    };
    let text = || ObjectBuilder::new().schema_type(Type::String);
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(
            ArrayBuilder::new().items(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("field", text())
                    .property("message", text())
                    .required("field")
                    .required("message"),
            ),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(AdditionalProperties::FreeForm(true))),
        )
        .build()
        .into()
}

#[derive(Serialize, ToSchema)]
pub struct ProgramView {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub pass_type_identifier: String,
    pub team_identifier: String,
    pub organization_name: String,
    pub rules: LoyaltyRules,
    pub created_at: i64,
}

impl From<&Program> for ProgramView {
    fn from(p: &Program) -> Self {
        ProgramView {
            id: p.id.clone(),
            slug: p.slug.clone(),
            name: p.name.clone(),
            pass_type_identifier: p.pass_type_identifier.clone(),
            team_identifier: p.team_identifier.clone(),
            organization_name: p.organization_name.clone(),
            rules: p.rules.clone(),
            created_at: p.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TemplateView {
    pub id: String,
    pub program_id: String,
    pub name: String,
    /// Bumped by every change; passes built from an older version are rebuilt.
    pub version: i64,
    pub design: TemplateDesign,
    pub updated_at: i64,
}

impl From<&Template> for TemplateView {
    fn from(t: &Template) -> Self {
        TemplateView {
            id: t.id.clone(),
            program_id: t.program_id.clone(),
            name: t.name.clone(),
            version: t.version,
            design: t.design.clone(),
            updated_at: t.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PassView {
    pub serial_number: String,
    pub pass_type_identifier: String,
    pub template_id: String,
    pub updated_at: i64,
    /// A plain-GET link that downloads the `.pkpass`; carries the pass's own download token
    /// (not its PassKit token). It answers 404 once the card has ended.
    pub pass_url: String,
    /// When Wallet last downloaded the pass through the PassKit web service.
    pub last_fetched_at: Option<i64>,
    /// When the card was ended (voided, or replaced by a reissue); absent while it is live.
    pub ended_at: Option<i64>,
}

/// A device that holds the pass and receives its pushes.
#[derive(Serialize, ToSchema)]
pub struct DeviceView {
    pub device_library_identifier: String,
    pub registered_at: i64,
    pub last_push_at: Option<i64>,
    /// `delivered`, `retry: <why>` or `rejected: <status> <reason>`.
    pub last_push_result: Option<String>,
}

/// A pass with the devices it is installed on: "pushed but never fetched" shows as a
/// `last_push_at` after `last_fetched_at`.
#[derive(Serialize, ToSchema)]
pub struct PassDetail {
    #[serde(flatten)]
    pub pass: PassView,
    pub devices: Vec<DeviceView>,
}

impl PassView {
    pub fn new(state: &AppState, p: &Pass) -> Self {
        PassView {
            serial_number: p.serial_number.clone(),
            pass_type_identifier: p.pass_type_identifier.clone(),
            template_id: p.template_id.clone(),
            updated_at: p.updated_at,
            pass_url: state.pass_url(p),
            last_fetched_at: p
                .last_fetched_at
                .max(state.fetches.pending(&p.serial_number)),
            ended_at: p.ended_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberSummary {
    pub id: String,
    pub program_id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    /// The card's barcode value.
    pub barcode: String,
    pub points: i64,
    /// The tier's name as the card shows it.
    pub tier: Option<String>,
    /// The tier's stable id (`rules.tiers.levels[].id`); it survives renaming the tier.
    pub tier_id: Option<String>,
    pub created_at: i64,
}

impl MemberSummary {
    pub fn new(m: &Member, rules: &LoyaltyRules) -> Self {
        MemberSummary {
            id: m.id.clone(),
            program_id: m.program_id.clone(),
            display_name: m.display_name.clone(),
            external_id: m.external_id.clone(),
            barcode: m.barcode.clone(),
            points: m.points,
            tier: rules.tier_name(m.tier.as_deref()).map(String::from),
            tier_id: m.tier.clone(),
            created_at: m.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TierProgress {
    pub basis: TierBasis,
    pub window_days: u32,
    /// Points (or spend) counted in the rolling window.
    pub qualifying: i64,
    pub next_tier: Option<String>,
    pub to_next_tier: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct NextExpiry {
    /// Milliseconds since the epoch.
    pub at: i64,
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub points: i64,
}

/// A member with their standing: balance, tier progress, next expiry and pass.
#[derive(Serialize, ToSchema)]
pub struct MemberView {
    #[serde(flatten)]
    pub member: MemberSummary,
    /// `points` less what open holds reserve: what the member can spend now.
    pub available_points: i64,
    pub tier_progress: TierProgress,
    pub next_expiry: Option<NextExpiry>,
    pub pass: PassView,
}

#[derive(Serialize, ToSchema)]
pub struct EntryView {
    pub id: String,
    pub member_id: String,
    /// earn, redeem, refund, adjust, expire or reversal.
    #[serde(rename = "type")]
    pub kind: String,
    /// Signed: positive credits, negative debits.
    pub points: i64,
    pub amount_minor: Option<i64>,
    pub external_ref: Option<String>,
    pub channel: Option<String>,
    pub store_id: Option<String>,
    pub partner_id: Option<String>,
    pub reason: Option<String>,
    pub reverses_entry_id: Option<String>,
    pub created_at: i64,
}

impl From<&Entry> for EntryView {
    fn from(e: &Entry) -> Self {
        EntryView {
            id: e.id.clone(),
            member_id: e.member_id.clone(),
            kind: e.kind.as_str().into(),
            points: e.points,
            amount_minor: e.amount_minor,
            external_ref: e.origin.external_ref.clone(),
            channel: e.origin.channel.clone(),
            store_id: e.origin.store_id.clone(),
            partner_id: e.origin.partner_id.clone(),
            reason: e.reason.clone(),
            reverses_entry_id: e.reverses_entry_id.clone(),
            created_at: e.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TransactionView {
    pub entry: EntryView,
    pub balance: i64,
    pub tier: Option<String>,
    /// For refunds: points due that could not be taken back because they were already spent.
    pub uncollected_points: i64,
}

impl From<&Outcome> for TransactionView {
    fn from(o: &Outcome) -> Self {
        TransactionView {
            entry: EntryView::from(&o.entry),
            balance: o.balance,
            tier: o.tier.clone(),
            uncollected_points: o.uncollected,
        }
    }
}

/// A page of items and the cursor of the next page (`null` on the last).
#[derive(Serialize, ToSchema)]
pub struct Paged<T: ToSchema> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PassList {
    pub items: Vec<PassDetail>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub max_points: Option<i64>,
    pub max_points_per_day: Option<i64>,
    pub revoked: bool,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyCreated {
    pub id: String,
    pub name: String,
    pub role: String,
    pub max_points: Option<i64>,
    pub max_points_per_day: Option<i64>,
    /// The full key, shown only in this response; only its hash is stored.
    pub key: String,
}

/// A member's Google Wallet card.
#[derive(Serialize, ToSchema)]
pub struct GoogleCard {
    pub object_id: String,
    pub class_id: String,
    /// "Add to Google Wallet": a signed link carrying only ids, under 1,800 characters.
    pub save_url: String,
    /// The balance Google shows, and when it was written.
    pub synced_points: i64,
    pub synced_at: i64,
    /// From Google's callbacks: true after a save, false after a delete, null if none came.
    pub saved: Option<bool>,
    /// The pass version (milliseconds, the pass's `updated_at`) Google last got.
    pub synced_version: i64,
    /// A change waits to reach Google (or a failed write waits for its retry).
    pub pending: bool,
    /// Failed tries since the card last reached Google.
    pub attempts: i64,
    /// Why the last try failed, while the change waits (Google's refusal or the outage).
    pub last_error: Option<String>,
    /// When the next try is due, while a change waits (a refused card is also tried again on
    /// its next change).
    pub next_attempt_at: Option<i64>,
    /// Messages Google refused until their attempt limit: given up, with the last reason.
    pub failed_messages: Vec<FailedMessage>,
}

/// A message Google refused until its attempt limit.
#[derive(Serialize, ToSchema)]
pub struct FailedMessage {
    pub message_id: String,
    pub error: String,
}

/// Messages queued for Google Wallet cards.
#[derive(Serialize, ToSchema)]
pub struct MessagesQueued {
    /// The id Google shows the message under; the same for a retried request.
    pub message_id: String,
    /// Cards newly queued (0 for a retry).
    pub queued: u64,
}

/// A hold: points reserved for a checkout until captured, voided or expired.
#[derive(Serialize, ToSchema)]
pub struct HoldView {
    pub id: String,
    pub member_id: String,
    /// The points reserved.
    pub points: i64,
    pub state: crate::ledger::HoldState,
    /// The points a capture redeemed; the rest was released.
    pub captured_points: Option<i64>,
    /// The redemption entry a capture posted.
    pub entry_id: Option<String>,
    pub external_ref: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub resolved_at: Option<i64>,
}

impl From<&crate::ledger::Hold> for HoldView {
    fn from(h: &crate::ledger::Hold) -> Self {
        HoldView {
            id: h.id.clone(),
            member_id: h.member_id.clone(),
            points: h.points,
            state: h.state,
            captured_points: h.captured,
            entry_id: h.entry_id.clone(),
            external_ref: h.external_ref.clone(),
            created_at: h.created_at,
            expires_at: h.expires_at,
            resolved_at: h.resolved_at,
        }
    }
}

/// A capture: the hold as resolved and the redemption it posted.
#[derive(Serialize, ToSchema)]
pub struct CaptureView {
    pub hold: HoldView,
    pub transaction: TransactionView,
}
