//! Holds: points reserved at a checkout, then captured (a redemption of up to the held points),
//! voided, or expired. While a hold is open its points stay in the balance but out of the
//! available balance; it resolves exactly once.

use serde::{Deserialize, Serialize};

/// The longest a hold may stay open before it is released: a week.
pub const MAX_HOLD_SECONDS: i64 = 7 * 86_400;

/// A hold's lifecycle: `held` until it is captured, voided or expired, each final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Held,
    Captured,
    Voided,
    Expired,
}

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Held => "held",
            HoldState::Captured => "captured",
            HoldState::Voided => "voided",
            HoldState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<HoldState> {
        Some(match s {
            "held" => HoldState::Held,
            "captured" => HoldState::Captured,
            "voided" => HoldState::Voided,
            "expired" => HoldState::Expired,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    pub member_id: String,
    /// The points reserved.
    pub points: i64,
    pub state: HoldState,
    /// The points a capture redeemed (the rest was released).
    pub captured: Option<i64>,
    /// The redemption entry a capture posted.
    pub entry_id: Option<String>,
    pub external_ref: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub resolved_at: Option<i64>,
}

impl Hold {
    /// Why a hold that is no longer open cannot be captured or voided.
    pub fn resolved_error(&self) -> String {
        format!("this hold is already {}", self.state.as_str())
    }
}
