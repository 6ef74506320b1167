//! The points ledger's rules: how purchases earn, how refunds take back, which tier a member is
//! in, and which lots a spend consumes. Pure functions over plain values; `storage` applies them
//! inside one transaction per change.
//!
//! Invariants (property-tested in `tests/it/ledger.rs`): a member's balance equals the sum of
//! their entries and never goes below zero; a refund never takes back more than its purchase
//! earned; spending consumes the oldest lots first.

use serde::{Deserialize, Serialize};

mod hold;
pub use hold::{Hold, HoldState, MAX_HOLD_SECONDS};

use crate::domain::{Checker, Invalid};

/// The largest amount in minor currency units one request may name: far above any real
/// purchase, and small enough that no product with a rule's factors overflows an i128.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// The most points one posting may move, either way; a purchase that would earn more is refused.
pub const MAX_POINTS: i64 = 1_000_000_000;

/// The largest balance a member may hold; a posting that would pass it is refused. Far below
/// `i64::MAX`, so no sum of balances or entries a report makes can overflow.
pub const MAX_BALANCE: i64 = 1_000_000_000_000_000;

/// `1000000000` as `1,000,000,000`, for limits named in errors.
pub use crate::domain::grouped;

/// A program's loyalty rules, stored as one JSON document with the program.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyRules {
    #[serde(default)]
    pub earn: EarnRule,
    /// Days after earning when points lapse; `None` for never.
    #[serde(default)]
    pub expiry_days: Option<u32>,
    #[serde(default)]
    pub tiers: TierRules,
}

/// `points` points for every `per_minor` minor currency units spent (1 per 100 cents by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EarnRule {
    pub points: i64,
    pub per_minor: i64,
}

impl Default for EarnRule {
    fn default() -> Self {
        EarnRule {
            points: 1,
            per_minor: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TierBasis {
    /// Points earned from purchases and fixed awards in the window.
    #[default]
    Points,
    /// Purchase amounts (minor units) in the window, less refunds.
    Spend,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierRules {
    #[serde(default)]
    pub basis: TierBasis,
    pub window_days: u32,
    /// Ascending thresholds; a member is in the highest tier whose threshold they reached.
    #[serde(default)]
    pub levels: Vec<Tier>,
}

impl Default for TierRules {
    fn default() -> Self {
        TierRules {
            basis: TierBasis::Points,
            window_days: 365,
            levels: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Stable id: members hold it, so renaming a tier keeps their standing and multiplier. Send
    /// it back unchanged when editing the rules; a new tier without one gets its name as id.
    #[serde(default)]
    pub id: String,
    pub name: String,
    pub threshold: i64,
    /// Accrual multiplier in thousandths: 1200 earns 1.2x on purchases.
    #[serde(default = "one_x")]
    pub multiplier_milli: i64,
}

fn one_x() -> i64 {
    1000
}

impl LoyaltyRules {
    pub fn validate(&self) -> Result<(), Invalid> {
        let mut c = Checker::default();
        c.check(
            (1..=1_000_000).contains(&self.earn.points),
            "earn.points",
            || "earn.points must be between 1 and 1000000".into(),
        );
        c.check(
            (1..=MAX_AMOUNT).contains(&self.earn.per_minor),
            "earn.per_minor",
            || format!("earn.per_minor must be between 1 and {MAX_AMOUNT}"),
        );
        if let Some(days) = self.expiry_days {
            c.check((1..=36_500).contains(&days), "expiry_days", || {
                "expiry_days must be between 1 and 36500, or null for never".into()
            });
        }
        c.check(
            (1..=3650).contains(&self.tiers.window_days),
            "tiers.window_days",
            || "tiers.window_days must be between 1 and 3650".into(),
        );
        let mut last = -1;
        for (i, t) in self.tiers.levels.iter().enumerate() {
            crate::domain::check_text(&mut c, &format!("tiers.levels[{i}].name"), &t.name, 50);
            crate::domain::check_text(&mut c, &format!("tiers.levels[{i}].id"), &t.id, 50);
            c.check(
                !self.tiers.levels[..i].iter().any(|o| o.id == t.id),
                "tiers.levels",
                || format!("tier ids must be unique; {:?} appears twice", t.id),
            );
            c.check(t.threshold > last, "tiers.levels", || {
                format!(
                    "tiers.levels must have strictly ascending thresholds from 0; {:?} does not",
                    t.name
                )
            });
            c.check(
                // Not `threshold + 1`: i64::MAX would overflow.
                (0..MAX_AMOUNT).contains(&t.threshold),
                "tiers.levels",
                || {
                    format!(
                        "tier {:?} threshold must be between 0 and {MAX_AMOUNT}",
                        t.name
                    )
                },
            );
            c.check(
                (1000..=10_000).contains(&t.multiplier_milli),
                "tiers.levels",
                || {
                    format!(
                        "tier {:?} multiplier_milli must be between 1000 (1x) and 10000 (10x)",
                        t.name
                    )
                },
            );
            last = t.threshold;
        }
        c.finish()
    }

    /// Gives every tier without an id one: the id it had in `previous` under the same name
    /// (a client that dropped the ids); else, when `previous` had as many tiers, the id at the
    /// same position that no other tier took (a rename without ids); else its name, made unique. Rules stored before tiers
    /// had ids get their names, which is what members' `tier` holds for them.
    pub fn assign_tier_ids(&mut self, previous: Option<&LoyaltyRules>) {
        for i in 0..self.tiers.levels.len() {
            if !self.tiers.levels[i].id.is_empty() {
                continue;
            }
            let name = self.tiers.levels[i].name.clone();
            let taken = |id: &str, levels: &[Tier]| levels.iter().any(|l| l.id == id);
            let by_name = previous.and_then(|p| p.tiers.levels.iter().find(|l| l.name == name));
            let by_position = previous
                .filter(|p| p.tiers.levels.len() == self.tiers.levels.len())
                .map(|p| &p.tiers.levels[i])
                .filter(|l| {
                    // Not when that tier's name is still in the new rules under its own name.
                    !self.tiers.levels.iter().any(|n| n.name == l.name)
                });
            let mut id = by_name
                .or(by_position)
                .map_or_else(|| name.clone(), |l| l.id.clone());
            let mut n = 2;
            while taken(&id, &self.tiers.levels) {
                id = format!("{name}-{n}");
                n += 1;
            }
            self.tiers.levels[i].id = id;
        }
    }

    /// The tier with this id, if the rules still have it.
    pub fn tier(&self, id: Option<&str>) -> Option<&Tier> {
        id.and_then(|id| self.tiers.levels.iter().find(|l| l.id == id))
    }

    /// The name a card shows for the tier with this id.
    pub fn tier_name(&self, id: Option<&str>) -> Option<&str> {
        self.tier(id).map(|t| t.name.as_str())
    }

    /// The accrual multiplier (thousandths) of a tier; 1000 without one.
    pub fn multiplier_for(&self, tier: Option<&str>) -> i64 {
        self.tier(tier).map_or(1000, |l| l.multiplier_milli)
    }

    /// Points a purchase of `amount_minor` earns at a tier multiplier (thousandths), rounded
    /// down; refused when that is more than one posting may move.
    pub fn purchase_points(&self, amount_minor: i64, multiplier_milli: i64) -> Result<i64, String> {
        // One rounding, at the end: flooring before the multiplier would lose points. Every
        // factor is bounded (amount by MAX_AMOUNT, the rule by `validate`), so i128 holds it.
        let numerator = amount_minor as i128 * self.earn.points as i128 * multiplier_milli as i128;
        let points = numerator / (self.earn.per_minor as i128 * 1000);
        if points > MAX_POINTS as i128 {
            return Err(format!(
                "a purchase of {amount_minor} would earn {points} points; one posting may move at most {}",
                grouped(MAX_POINTS)
            ));
        }
        Ok(points as i64)
    }

    /// The tier for a qualifying total, if any.
    pub fn tier_for(&self, qualifying: i64) -> Option<&Tier> {
        self.tiers
            .levels
            .iter()
            .rev()
            .find(|t| qualifying >= t.threshold)
    }

    /// The tier above `current` (an id), or the first one, for "N points to Gold".
    pub fn next_tier(&self, current: Option<&str>) -> Option<&Tier> {
        match current {
            None => self.tiers.levels.first(),
            Some(id) => {
                let i = self.tiers.levels.iter().position(|t| t.id == id)?;
                self.tiers.levels.get(i + 1)
            }
        }
    }
}

/// Points a refund takes back. `earned` and `purchase_minor` are what the purchase earned and
/// cost; `refunded_minor` and `refunded_points` what earlier refunds of it took. The total taken
/// back is proportional to the total amount refunded and never exceeds `earned`.
pub fn refund_points(
    earned: i64,
    purchase_minor: i64,
    refunded_minor: i64,
    refunded_points: i64,
    refund_minor: i64,
) -> Result<i64, String> {
    let total_refunded = refunded_minor + refund_minor;
    if total_refunded > purchase_minor {
        return Err(format!(
            "the refunds of this purchase would total {total_refunded}, more than its amount {purchase_minor}"
        ));
    }
    let due_in_total = if purchase_minor == 0 {
        earned
    } else {
        (earned as i128 * total_refunded as i128 / purchase_minor as i128) as i64
    };
    Ok((due_in_total.min(earned) - refunded_points).max(0))
}

/// A still-spendable batch of points, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub id: String,
    pub remaining: i64,
}

/// How many points to take from each lot to spend `points`, oldest lot first.
/// Returns `None` when the lots hold fewer than `points`.
pub fn consume(lots: &[Lot], points: i64) -> Option<Vec<(String, i64)>> {
    let mut left = points;
    let mut takes = Vec::new();
    for lot in lots {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        if take > 0 {
            takes.push((lot.id.clone(), take));
            left -= take;
        }
    }
    (left == 0).then_some(takes)
}

/// One change to a member's points, as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A purchase of `amount_minor`, earning through the program's rule and the member's tier.
    EarnPurchase {
        amount_minor: i64,
    },
    /// A fixed number of points (a bonus, a campaign).
    EarnPoints {
        points: i64,
    },
    Redeem {
        points: i64,
    },
    /// A (partial) refund of the purchase whose `external_ref` the posting names.
    Refund {
        amount_minor: i64,
    },
    /// A manual correction, positive or negative, with a reason.
    Adjust {
        points: i64,
        reason: String,
    },
    /// Undoes one earlier entry of the same member.
    Reverse {
        entry_id: String,
    },
}

impl Operation {
    pub fn kind(&self) -> EntryKind {
        match self {
            Operation::EarnPurchase { .. } | Operation::EarnPoints { .. } => EntryKind::Earn,
            Operation::Redeem { .. } => EntryKind::Redeem,
            Operation::Refund { .. } => EntryKind::Refund,
            Operation::Adjust { .. } => EntryKind::Adjust,
            Operation::Reverse { .. } => EntryKind::Reversal,
        }
    }

    /// Whether the operation counts toward a cashier's limits: purchases and redemptions.
    pub fn is_limited(&self) -> bool {
        matches!(self.kind(), EntryKind::Earn | EntryKind::Redeem)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Earn,
    Redeem,
    Refund,
    Adjust,
    Expire,
    Reversal,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Earn => "earn",
            EntryKind::Redeem => "redeem",
            EntryKind::Refund => "refund",
            EntryKind::Adjust => "adjust",
            EntryKind::Expire => "expire",
            EntryKind::Reversal => "reversal",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        [
            Self::Earn,
            Self::Redeem,
            Self::Refund,
            Self::Adjust,
            Self::Expire,
            Self::Reversal,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Where a change came from, for reports split by channel, store and partner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub external_ref: Option<String>,
    pub channel: Option<String>,
    pub store_id: Option<String>,
    pub partner_id: Option<String>,
}

/// What one actor (an API key or a staff account) may move with purchases and redemptions,
/// checked inside the ledger transaction so racing requests cannot pass it together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PointLimits {
    pub per_operation: Option<i64>,
    /// Per UTC day, summed over the actor's purchases and redemptions.
    pub per_day: Option<i64>,
}

/// A retryable write's key: scoped to the API key that sent it, with a hash of the request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub api_key_id: String,
    pub key: String,
    pub request_hash: String,
}

/// A ledger entry as stored. Entries are never updated or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub member_id: String,
    pub kind: EntryKind,
    pub points: i64,
    pub amount_minor: Option<i64>,
    #[serde(flatten)]
    pub origin: Origin,
    pub reason: Option<String>,
    pub reverses_entry_id: Option<String>,
    pub created_at: i64,
}

/// The result of a posting: what a retry with the same idempotency key gets back again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub entry: Entry,
    pub balance: i64,
    pub tier: Option<String>,
    /// For refunds: points due that the balance could not cover (already spent).
    #[serde(default)]
    pub uncollected: i64,
}

/// When points earned at `earned_at_ms` lapse: the end of the UTC day `days` later, so a card
/// can say "expire on 31 Jan" and lots earned the same day lapse together.
pub fn expiry_at(earned_at_ms: i64, days: u32) -> i64 {
    const DAY: i64 = 86_400_000;
    (earned_at_ms.div_euclid(DAY) + days as i64 + 1) * DAY - 1
}

#[cfg(test)]
mod tests;
