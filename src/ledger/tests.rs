use proptest::prelude::*;

use super::*;

fn rules() -> LoyaltyRules {
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
                Tier {
                    id: "bronze".into(),
                    name: "Bronze".into(),
                    threshold: 0,
                    multiplier_milli: 1000,
                },
                Tier {
                    id: "silver".into(),
                    name: "Silver".into(),
                    threshold: 500,
                    multiplier_milli: 1200,
                },
                Tier {
                    id: "gold".into(),
                    name: "Gold".into(),
                    threshold: 2000,
                    multiplier_milli: 1500,
                },
            ],
        },
    }
}

#[test]
fn purchases_earn_by_rule_and_multiplier() {
    let r = rules();
    assert_eq!(r.purchase_points(12_345, 1000), Ok(123));
    assert_eq!(r.purchase_points(12_345, 1200), Ok(148));
    assert_eq!(r.purchase_points(99, 1500), Ok(1), "1.485 rounds down once");
    assert_eq!(r.purchase_points(66, 1500), Ok(0));
    assert_eq!(r.purchase_points(10_000_000_000, 10_000), Ok(MAX_POINTS));
    // The largest rule and amount: 10^12 * 10^6 * 10x would be 10^19 points, past i64::MAX.
    let mut big = rules();
    big.earn = EarnRule {
        points: 1_000_000,
        per_minor: 1,
    };
    let refused = big.purchase_points(MAX_AMOUNT, 10_000).unwrap_err();
    assert!(refused.contains("at most 1,000,000,000"), "{refused}");
    assert!(big.purchase_points(1000, 1000).is_ok());
}

#[test]
fn grouped_numbers() {
    assert_eq!(grouped(1_000_000_000), "1,000,000,000");
    assert_eq!(grouped(-1_000), "-1,000");
    assert_eq!(grouped(999), "999");
    assert_eq!(grouped(i64::MIN), "-9,223,372,036,854,775,808");
}

#[test]
fn tier_ids_survive_renames() {
    let old = rules();
    let mut renamed = rules();
    renamed.tiers.levels[1].name = "Argent".into();
    assert_eq!(renamed.multiplier_for(Some("silver")), 1200);
    assert_eq!(renamed.tier_name(Some("silver")), Some("Argent"));
    assert_eq!(renamed.next_tier(Some("silver")).unwrap().name, "Gold");
    // A client that drops the ids keeps them by name; a new tier takes its name, made unique.
    let mut no_ids = rules();
    no_ids.tiers.levels.iter_mut().for_each(|l| l.id.clear());
    no_ids.tiers.levels.push(Tier {
        id: String::new(),
        name: "gold".into(),
        threshold: 9000,
        multiplier_milli: 2000,
    });
    no_ids.assign_tier_ids(Some(&old));
    let ids: Vec<&str> = no_ids.tiers.levels.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["bronze", "silver", "gold", "gold-2"]);
    assert!(no_ids.validate().is_ok());
    // A rename without ids, same number of tiers: the renamed tier keeps its id by position.
    let mut renamed = rules();
    renamed.tiers.levels.iter_mut().for_each(|l| l.id.clear());
    renamed.tiers.levels[2].name = "Gold VIP".into();
    renamed.assign_tier_ids(Some(&old));
    let ids: Vec<&str> = renamed.tiers.levels.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["bronze", "silver", "gold"]);
    let mut twice = rules();
    twice.tiers.levels[2].id = "silver".into();
    let err = twice.validate().unwrap_err().to_string();
    assert!(err.contains("unique"), "{err}");
}

#[test]
fn huge_thresholds_are_refused_not_overflowed() {
    let mut r = rules();
    r.tiers.levels[2].threshold = i64::MAX;
    assert!(r.validate().is_err());
}

#[test]
fn tiers_by_threshold() {
    let r = rules();
    assert_eq!(r.tier_for(499).unwrap().name, "Bronze");
    assert_eq!(r.tier_for(500).unwrap().name, "Silver");
    assert_eq!(r.tier_for(10_000).unwrap().name, "Gold");
    assert_eq!(r.next_tier(Some("silver")).unwrap().name, "Gold");
    assert!(r.next_tier(Some("gold")).is_none());
    assert!(LoyaltyRules::default().tier_for(100).is_none());
}

#[test]
fn rules_validation_names_problems() {
    let mut r = rules();
    r.tiers.levels[2].threshold = 100;
    r.earn.per_minor = 0;
    let err = r.validate().unwrap_err().to_string();
    assert!(err.contains("strictly ascending"), "{err}");
    assert!(err.contains("earn.per_minor"), "{err}");
    assert!(rules().validate().is_ok());
}

#[test]
fn refunds_are_proportional() {
    // 1000 points on a 10,000 purchase: refund 2,500 then 7,500.
    assert_eq!(refund_points(1000, 10_000, 0, 0, 2_500), Ok(250));
    assert_eq!(refund_points(1000, 10_000, 2_500, 250, 7_500), Ok(750));
    assert!(refund_points(1000, 10_000, 10_000, 1000, 1).is_err());
}

#[test]
fn spending_takes_oldest_lots_first() {
    let lots = vec![
        Lot {
            id: "a".into(),
            remaining: 30,
        },
        Lot {
            id: "b".into(),
            remaining: 50,
        },
    ];
    assert_eq!(
        consume(&lots, 40),
        Some(vec![("a".into(), 30), ("b".into(), 10)])
    );
    assert_eq!(consume(&lots, 80).unwrap().len(), 2);
    assert_eq!(consume(&lots, 81), None);
    assert_eq!(consume(&lots, 0), Some(vec![]));
}

proptest! {
    /// However a purchase is refunded in parts, the points taken back never exceed what it
    /// earned, and a full refund takes back exactly that.
    #[test]
    fn partial_refunds_never_exceed_earned(earned in 0i64..1_000_000, purchase in 1i64..10_000_000, cuts in prop::collection::vec(1u32..100, 1..8)) {
        let total: u64 = cuts.iter().map(|c| *c as u64).sum();
        let mut refunded_minor = 0;
        let mut refunded_points = 0;
        for (i, cut) in cuts.iter().enumerate() {
            let part = if i + 1 == cuts.len() { purchase - refunded_minor } else { (purchase as u64 * *cut as u64 / total) as i64 };
            let take = refund_points(earned, purchase, refunded_minor, refunded_points, part).unwrap();
            prop_assert!(take >= 0);
            refunded_minor += part;
            refunded_points += take;
            prop_assert!(refunded_points <= earned);
        }
        prop_assert_eq!(refunded_points, earned);
    }

    #[test]
    fn consume_takes_exactly_the_amount(lots in prop::collection::vec(0i64..1000, 0..10), points in 0i64..5000) {
        let lots: Vec<Lot> = lots.iter().enumerate().map(|(i, r)| Lot { id: i.to_string(), remaining: *r }).collect();
        let available: i64 = lots.iter().map(|l| l.remaining).sum();
        match consume(&lots, points) {
            Some(takes) => {
                prop_assert!(points <= available);
                prop_assert_eq!(takes.iter().map(|t| t.1).sum::<i64>(), points);
                for (id, take) in &takes {
                    let lot = lots.iter().find(|l| &l.id == id).unwrap();
                    prop_assert!(*take <= lot.remaining && *take > 0);
                }
            }
            None => prop_assert!(points > available),
        }
    }
}

#[test]
fn extreme_thresholds_are_refused_not_overflowed() {
    let mut r = rules();
    r.tiers.levels[2].threshold = i64::MAX;
    let e = r.validate().unwrap_err().to_string();
    assert!(e.contains("threshold must be between 0 and"), "{e}");
    r.tiers.levels[2].threshold = MAX_AMOUNT - 1;
    assert!(r.validate().is_ok());
}
