//! The event feed (`GET /api/v1/events`): every change of the catalogue, in order, resumable
//! from an opaque cursor. Webhooks (`api::webhooks`) deliver the same events.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ApiQuery};
use super::views::ErrorBody;
use crate::app::AppState;
use crate::storage::Role;
use crate::storage::events::{CATALOGUE, EventRecord, Position};

/// Who may read the feed: the roles that list members.
pub const READERS: &[Role] = &[Role::Admin, Role::Marketer, Role::Integration];

/// The event catalogue. Every event's payload names the member's `balance` (and `tier`,
/// `tier_id`) where the change moved them. Payload schema version 1 for every type.
///
/// - `member.created`: `source` (`api`, `join`, `import`), `external_id`, `balance`, `tier`
/// - `member.updated`: `fields` (names only, never values), `version` (the profile's)
/// - `member.erased`: `fields` that held a value, `card_ended`
/// - `card.installed`, `card.removed`: `wallet` (`apple`, `google`) and `serial_number` or
///   `object_id`
/// - `points.earned`, `points.redeemed`, `points.refunded`, `points.adjusted`,
///   `points.expired`, `points.reversed`: `entry_id`, `points` (signed), `amount_minor`,
///   `external_ref`, `reverses_entry_id`, `balance`, `tier`, `tier_id`
/// - `tier.changed`: `entry_id`, `from_tier_id`, `tier_id`, `tier`, `balance`
/// - `consent.changed`: `kind`, `granted`, `source`
/// - `scan.performed`: `by` (`staff:<id>`), `balance`
/// - `hold.created`, `hold.captured`, `hold.voided`, `hold.expired`: `hold_id`, `points` (held),
///   `captured` and `entry_id` (a capture, whose redemption is also a `points.redeemed`),
///   `external_ref`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventType {
    #[serde(rename = "member.created")]
    MemberCreated,
    #[serde(rename = "member.updated")]
    MemberUpdated,
    #[serde(rename = "member.erased")]
    MemberErased,
    #[serde(rename = "card.installed")]
    CardInstalled,
    #[serde(rename = "card.removed")]
    CardRemoved,
    #[serde(rename = "points.earned")]
    PointsEarned,
    #[serde(rename = "points.redeemed")]
    PointsRedeemed,
    #[serde(rename = "points.refunded")]
    PointsRefunded,
    #[serde(rename = "points.adjusted")]
    PointsAdjusted,
    #[serde(rename = "points.expired")]
    PointsExpired,
    #[serde(rename = "points.reversed")]
    PointsReversed,
    #[serde(rename = "tier.changed")]
    TierChanged,
    #[serde(rename = "consent.changed")]
    ConsentChanged,
    #[serde(rename = "scan.performed")]
    ScanPerformed,
    #[serde(rename = "hold.created")]
    HoldCreated,
    #[serde(rename = "hold.captured")]
    HoldCaptured,
    #[serde(rename = "hold.voided")]
    HoldVoided,
    #[serde(rename = "hold.expired")]
    HoldExpired,
}

/// One event. Consumers deduplicate on `id`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// Unique; the same on every delivery of the event.
    pub id: String,
    #[serde(rename = "type")]
    #[schema(value_type = EventType)]
    pub kind: String,
    /// The payload's schema version.
    pub version: i64,
    pub program_id: String,
    pub member_id: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// The event's data (see `EventType`).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// The feed's cursor just past this event.
    pub cursor: String,
}

impl From<&EventRecord> for EventView {
    fn from(e: &EventRecord) -> EventView {
        EventView {
            id: e.id.clone(),
            kind: e.kind.clone(),
            version: e.version,
            program_id: e.program_id.clone(),
            member_id: e.member_id.clone(),
            created_at: e.created_at,
            payload: e.payload.clone(),
            cursor: e.position.to_string(),
        }
    }
}

/// A page of the feed.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventView>,
    /// Where to resume (`after`): past the last event of this page, or where the request
    /// started when there was none. Always set: a feed has no last page.
    pub next_cursor: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The `next_cursor` (or an event's `cursor`) to resume after; from the oldest kept event
    /// when absent.
    #[param(max_length = 64)]
    after: Option<String>,
    /// Events per page, 1 to 500 (default 100).
    limit: Option<i64>,
    /// Only these types, comma-separated (`points.earned,tier.changed`).
    #[param(max_length = 1000)]
    types: Option<String>,
}

/// Parses `types=a,b`; each must be in the catalogue.
pub fn parse_types(types: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(types) = types.filter(|t| !t.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in types.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !CATALOGUE.contains(&t) {
            return Err(ApiError::bad_request(format!(
                "unknown event type {t:?}; the types are {}",
                CATALOGUE.join(", ")
            )));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// Read events in order, from the oldest kept or after a cursor. A page never skips an event
/// that commits later: the feed shows an event only once every change that started before it
/// has ended.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(FeedQuery),
    responses((status = 200, description = "OK", body = EventPage), (status = 400, description = "Invalid request; the error names the problem", body = ErrorBody), (status = 401, description = "Missing, invalid or revoked API key", body = ErrorBody), (status = 403, description = "The key's role may not do this", body = ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    audit: crate::web::audit::Audit,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Json<EventPage>, ApiError> {
    caller.require(READERS)?;
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => Position::default(),
        Some(a) => Position::parse(a)
            .ok_or_else(|| ApiError::bad_request("after is not a cursor this API returned"))?,
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and 500 (at most 500), got {limit}"
        )));
    }
    let kinds = parse_types(q.types.as_deref())?;
    let events = state.store.events_after(after, &kinds, limit).await?;
    audit.members(events.iter().map(|e| e.member_id.as_str()));
    let next_cursor = events.last().map_or(after, |e| e.position).to_string();
    Ok(Json(EventPage {
        items: events.iter().map(EventView::from).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_types_are_the_catalogue() {
        for t in CATALOGUE {
            let parsed: EventType = serde_json::from_value(serde_json::json!(t)).unwrap();
            assert_eq!(serde_json::to_value(parsed).unwrap(), serde_json::json!(t));
        }
        assert!(parse_types(Some("points.earned, nope")).is_err());
        assert_eq!(
            parse_types(Some("tier.changed,tier.changed")).unwrap(),
            vec!["tier.changed"]
        );
    }
}
