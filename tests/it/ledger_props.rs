//! Property tests of the ledger against real storage: random sequences of earn, redeem, refund,
//! adjust, reversal and expiry keep every invariant after every step.

use proptest::prelude::*;

use tessera::ledger::{EntryKind, Operation, Origin};
use tessera::storage::{StorageError, Store};

use crate::helpers::{TestDb, member_with_rules};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_800_000_000_000;

#[derive(Debug, Clone)]
enum Step {
    Purchase { amount: i64, order: u8 },
    Points(i64),
    Redeem(i64),
    Refund { order: u8, percent: i64 },
    Adjust(i64),
    Reverse(usize),
    Advance(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1i64..60_000, 0u8..4).prop_map(|(amount, order)| Step::Purchase { amount, order }),
        2 => (1i64..500).prop_map(Step::Points),
        3 => (1i64..800).prop_map(Step::Redeem),
        2 => (0u8..4, 1i64..=100).prop_map(|(order, percent)| Step::Refund { order, percent }),
        1 => (-300i64..300).prop_filter("non-zero", |p| *p != 0).prop_map(Step::Adjust),
        1 => (0usize..40).prop_map(Step::Reverse),
        1 => (1i64..20).prop_map(Step::Advance),
    ]
}

async fn run(db: TestDb, steps: Vec<Step>) {
    let store = db.store().await;
    let mut rules = tessera::demo::rules();
    rules.expiry_days = Some(30);
    let m = member_with_rules(&store, rules).await;
    let mut now = T0;
    for s in steps {
        now += 1;
        let order = |o: u8| Origin {
            external_ref: Some(format!("order-{o}")),
            ..Origin::default()
        };
        let result = match &s {
            Step::Purchase { amount, order: o } => {
                post(
                    &store,
                    &m.id,
                    Operation::EarnPurchase {
                        amount_minor: *amount,
                    },
                    order(*o),
                    now,
                )
                .await
            }
            Step::Points(p) => {
                post(
                    &store,
                    &m.id,
                    Operation::EarnPoints { points: *p },
                    Origin::default(),
                    now,
                )
                .await
            }
            Step::Redeem(p) => {
                post(
                    &store,
                    &m.id,
                    Operation::Redeem { points: *p },
                    Origin::default(),
                    now,
                )
                .await
            }
            Step::Refund { order: o, percent } => {
                let bought = purchases(&store, &m.id, &format!("order-{o}")).await;
                let amount = (bought * percent / 100).max(1);
                post(
                    &store,
                    &m.id,
                    Operation::Refund {
                        amount_minor: amount,
                    },
                    order(*o),
                    now,
                )
                .await
            }
            Step::Adjust(p) => {
                post(
                    &store,
                    &m.id,
                    Operation::Adjust {
                        points: *p,
                        reason: "prop".into(),
                    },
                    Origin::default(),
                    now,
                )
                .await
            }
            Step::Reverse(n) => {
                let entries = store.list_entries(&m.id, None, 100).await.unwrap();
                match entries.get(n % entries.len().max(1)) {
                    Some(e) => {
                        post(
                            &store,
                            &m.id,
                            Operation::Reverse {
                                entry_id: e.id.clone(),
                            },
                            Origin::default(),
                            now,
                        )
                        .await
                    }
                    None => Ok(()),
                }
            }
            Step::Advance(days) => {
                now += days * DAY;
                store.expire_due(now, 100).await.map(|_| ())
            }
        };
        match result {
            Ok(())
            | Err(
                StorageError::Insufficient { .. }
                | StorageError::Rejected(_)
                | StorageError::NotFound(_),
            ) => {}
            Err(e) => panic!("{s:?} failed unexpectedly: {e}"),
        }
        check(&store, &m.id, &s).await;
    }
}

async fn post(
    store: &Store,
    member: &str,
    op: Operation,
    origin: Origin,
    now: i64,
) -> Result<(), StorageError> {
    let before = store.get_member(member).await.unwrap().points;
    match store.post(member, &op, &origin, None, None, now).await {
        Ok((o, _)) => {
            assert_eq!(o.balance, before + o.entry.points, "the outcome's balance");
            Ok(())
        }
        Err(e) => {
            assert_eq!(
                store.get_member(member).await.unwrap().points,
                before,
                "a refused change moved the balance"
            );
            Err(e)
        }
    }
}

async fn purchases(store: &Store, member: &str, reference: &str) -> i64 {
    let entries = store.list_entries(member, None, 1000).await.unwrap();
    entries
        .iter()
        .filter(|e| {
            e.kind == EntryKind::Earn && e.origin.external_ref.as_deref() == Some(reference)
        })
        .filter_map(|e| e.amount_minor)
        .sum()
}

async fn check(store: &Store, member: &str, step: &Step) {
    let balance = store.get_member(member).await.unwrap().points;
    assert!(balance >= 0, "after {step:?}: balance {balance}");
    assert_eq!(
        store.ledger_sum(member).await.unwrap(),
        balance,
        "after {step:?}: balance = sum of entries"
    );
    assert_eq!(
        store.lots_sum(member).await.unwrap(),
        balance,
        "after {step:?}: balance = sum of lots"
    );
    let entries = store.list_entries(member, None, 1000).await.unwrap();
    // A reversed earn has nothing left to refund, and a reversed refund gives its points back:
    // neither counts.
    let reversed = |id: &str| {
        entries
            .iter()
            .any(|r| r.reverses_entry_id.as_deref() == Some(id))
    };
    for o in 0..4 {
        let reference = format!("order-{o}");
        let sum = |kind| -> i64 {
            let matching = entries.iter().filter(|e| {
                e.kind == kind
                    && e.origin.external_ref.as_deref() == Some(reference.as_str())
                    && !reversed(&e.id)
            });
            matching.map(|e| e.points).sum()
        };
        let (earned, taken) = (sum(EntryKind::Earn), -sum(EntryKind::Refund));
        assert!(
            taken <= earned,
            "after {step:?}: refunds of order-{o} took {taken} of {earned} earned"
        );
    }
}

fn block_on(f: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn ledger_invariants_hold_on_sqlite(steps in prop::collection::vec(step(), 1..40)) {
        block_on(async { run(TestDb::sqlite().await, steps).await });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn ledger_invariants_hold_on_postgres(steps in prop::collection::vec(step(), 1..40)) {
        block_on(async {
            if let Some(db) = TestDb::postgres().await {
                run(db, steps).await
            }
        });
    }
}
