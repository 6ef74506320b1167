//! Which changes a card's Google notification budget is spent on (issue 15): per program, for
//! example "redemptions, tier changes and changes of at least 50 points; silently otherwise".
//! Google allows 3 notifying updates per card per 24 h (`google-wallet.md` §5.4); the policy
//! picks which changes may use them, the budget still caps them.

/// A program's policy. The default notifies on every balance change, as before policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifyPolicy {
    /// A redemption since the last sync notifies.
    pub on_redemption: bool,
    /// A tier change since the last sync notifies.
    pub on_tier_change: bool,
    /// A balance change of at least this many points (either way) notifies; 0: none by size.
    pub min_points: i64,
}

impl Default for NotifyPolicy {
    fn default() -> Self {
        NotifyPolicy {
            on_redemption: true,
            on_tier_change: true,
            min_points: 1,
        }
    }
}

/// What changed on a card since Google last got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardChange<'a> {
    pub points_before: i64,
    pub points_after: i64,
    pub tier_before: Option<&'a str>,
    pub tier_after: Option<&'a str>,
    /// A redemption was posted since the last sync.
    pub redeemed: bool,
}

impl NotifyPolicy {
    /// Whether this change should notify the holder (budget permitting).
    pub fn notifies(&self, c: &CardChange<'_>) -> bool {
        let delta = (c.points_after - c.points_before).abs();
        (self.on_redemption && c.redeemed)
            || (self.on_tier_change && c.tier_before != c.tier_after)
            || (self.min_points > 0 && delta >= self.min_points)
    }

    /// The problems of a policy as asked for, empty when it is valid.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.min_points < 0 {
            out.push("min_points must be 0 or more");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(before: i64, after: i64) -> CardChange<'static> {
        CardChange {
            points_before: before,
            points_after: after,
            tier_before: Some("t1"),
            tier_after: Some("t1"),
            redeemed: false,
        }
    }

    #[test]
    fn the_default_notifies_every_balance_change_and_nothing_else() {
        let p = NotifyPolicy::default();
        assert!(p.notifies(&change(10, 11)));
        assert!(p.notifies(&change(10, 9)));
        assert!(!p.notifies(&change(10, 10)));
    }

    #[test]
    fn a_policy_notifies_on_what_it_names_only() {
        let p = NotifyPolicy {
            on_redemption: true,
            on_tier_change: true,
            min_points: 50,
        };
        assert!(!p.notifies(&change(0, 49)), "a small earn is silent");
        assert!(p.notifies(&change(0, 50)));
        assert!(p.notifies(&change(100, 40)), "a large loss too");
        let redeem = CardChange {
            redeemed: true,
            ..change(100, 95)
        };
        assert!(p.notifies(&redeem));
        let promoted = CardChange {
            tier_after: Some("t2"),
            ..change(0, 10)
        };
        assert!(p.notifies(&promoted));
        let silent = NotifyPolicy {
            on_redemption: false,
            on_tier_change: false,
            min_points: 0,
        };
        assert!(!silent.notifies(&redeem) && !silent.notifies(&promoted));
        assert!(!silent.notifies(&change(0, 1_000)));
        assert_eq!(
            NotifyPolicy {
                min_points: -1,
                ..silent
            }
            .problems(),
            ["min_points must be 0 or more"]
        );
    }
}
