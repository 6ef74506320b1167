//! The storage suite: every test runs on SQLite and on PostgreSQL.

use std::sync::Arc;

use tessera::domain::{NewMember, NewProgram, Program, Template, now_ms};
use tessera::ledger::{Operation, Origin};
use tessera::storage::{Role, StorageError, Store};

use crate::helpers::{TestDb, limits};
use crate::on_both_backends;

fn new_program(slug: &str) -> NewProgram {
    NewProgram {
        slug: slug.into(),
        name: "Coffee".into(),
        pass_type_identifier: "pass.com.example.coffee".into(),
        team_identifier: "ABCDE12345".into(),
        organization_name: "Coffee Ltd".into(),
        rules: Default::default(),
    }
}

async fn program_with_template(store: &Store) -> (Program, Template) {
    let program = store.insert_program(&new_program("coffee")).await.unwrap();
    let design = tessera::demo::design().validate().unwrap();
    let images = vec![
        ("icon.png".to_string(), vec![1, 2, 3]),
        ("icon@2x.png".to_string(), vec![4, 5]),
    ];
    let template = store
        .insert_template(&program.id, "Default", &design, &images)
        .await
        .unwrap();
    (program, template)
}

async fn programs_round_trip_and_slugs_are_unique(db: TestDb) {
    let store = db.store().await;
    store.migrate().await.expect("migrating twice is a no-op");
    let p = store.insert_program(&new_program("coffee")).await.unwrap();
    assert_eq!(store.get_program(&p.id).await.unwrap(), p);
    assert_eq!(store.find_program_by_slug("coffee").await.unwrap(), Some(p));
    assert!(matches!(
        store.insert_program(&new_program("coffee")).await,
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        store.get_program("nope").await,
        Err(StorageError::NotFound("program"))
    ));
    assert_eq!(store.find_program_by_slug("nope").await.unwrap(), None);
}

async fn templates_keep_design_and_images_and_version(db: TestDb) {
    let store = db.store().await;
    let (program, template) = program_with_template(&store).await;
    let loaded = store.get_template(&template.id).await.unwrap();
    assert_eq!(loaded.design, template.design);
    assert_eq!(loaded.version, 1);
    assert_eq!(
        store
            .latest_template(&program.id)
            .await
            .unwrap()
            .unwrap()
            .id,
        template.id
    );
    assert_eq!(
        store.template_images(&template.id).await.unwrap(),
        vec![
            ("icon.png".to_string(), vec![1, 2, 3]),
            ("icon@2x.png".to_string(), vec![4, 5])
        ]
    );
    let (_, pass) = store
        .insert_member(
            &program,
            &template,
            &NewMember {
                display_name: "A".into(),
                external_id: None,
            },
        )
        .await
        .unwrap();
    let v2 = store
        .replace_template_images(&template.id, &[("icon.png".to_string(), vec![9])])
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let images = store.template_images(&template.id).await.unwrap();
    assert_eq!(images[0], ("icon.png".to_string(), vec![9]));
    assert_eq!(images.len(), 2);
    // Holders are told by a publish job, in batches, not in the image change's transaction.
    let job = store
        .latest_publish_job(&template.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.version, job.total, job.status.as_str()),
        (2, 1, "running")
    );
    let job = store.publish_step(&job.id, 100, now_ms()).await.unwrap();
    assert_eq!((job.done, job.status.as_str()), (1, "done"));
    assert!(
        store
            .get_pass(&pass.serial_number)
            .await
            .unwrap()
            .updated_at
            > pass.updated_at
    );
    assert!(matches!(
        store
            .insert_template("nope", "x", &template.design, &[])
            .await,
        Err(StorageError::NotFound("program"))
    ));
    assert!(matches!(
        store.replace_template_images("nope", &[]).await,
        Err(StorageError::NotFound(_))
    ));
}

async fn members_get_unguessable_barcodes_and_passes(db: TestDb) {
    let store = db.store().await;
    let (program, template) = program_with_template(&store).await;
    let new = NewMember {
        display_name: "Ada".into(),
        external_id: Some("crm-1".into()),
    };
    let (m1, p1) = store
        .insert_member(&program, &template, &new)
        .await
        .unwrap();
    let (m2, p2) = store
        .insert_member(
            &program,
            &template,
            &NewMember {
                display_name: "Bob".into(),
                external_id: None,
            },
        )
        .await
        .unwrap();
    assert_ne!(m1.barcode, m2.barcode);
    assert_ne!(p1.serial_number, p2.serial_number);
    assert!(p1.authentication_token.len() >= 32);
    assert_eq!(store.get_member(&m1.id).await.unwrap(), m1);
    assert_eq!(store.pass_for_member(&m1.id).await.unwrap(), p1);
    assert_eq!(store.get_pass(&p1.serial_number).await.unwrap(), p1);
    assert_eq!(
        store
            .find_member_by_external_id(&program.id, "crm-1")
            .await
            .unwrap(),
        Some(m1)
    );
    let before = store.counts().await.unwrap();
    assert!(matches!(
        store.insert_member(&program, &template, &new).await,
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(
        store.counts().await.unwrap(),
        before,
        "a failed member insert leaves no pass behind"
    );
}

async fn balance_never_goes_below_zero_under_concurrency(db: TestDb) {
    let store = db.store().await;
    let (program, template) = program_with_template(&store).await;
    let (m, _) = store
        .insert_member(
            &program,
            &template,
            &NewMember {
                display_name: "A".into(),
                external_id: None,
            },
        )
        .await
        .unwrap();
    let now = tessera::domain::now_ms();
    let none = Origin::default();
    store
        .post(
            &m.id,
            &Operation::EarnPoints { points: 100 },
            &none,
            None,
            None,
            now,
        )
        .await
        .unwrap();
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..25)
        .map(|_| {
            let store = store.clone();
            let id = m.id.clone();
            let op = Operation::Redeem { points: 10 };
            tokio::spawn(async move {
                store
                    .post(&id, &op, &Origin::default(), None, None, now)
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(StorageError::Insufficient { available }) => assert!(available < 10, "{available}"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(accepted, 10, "exactly the redeems the balance covers");
    let member = store.get_member(&m.id).await.unwrap();
    assert_eq!(member.points, 0);
    assert_eq!(store.ledger_sum(&m.id).await.unwrap(), member.points);
    assert_eq!(store.lots_sum(&m.id).await.unwrap(), member.points);
    assert!(matches!(
        store
            .post(
                "nope",
                &Operation::EarnPoints { points: 1 },
                &none,
                None,
                None,
                now
            )
            .await,
        Err(StorageError::NotFound("member"))
    ));
}

async fn api_keys_store_hashes_and_revoke(db: TestDb) {
    let store = db.store().await;
    let (id, key) =
        tessera::api::auth::create_key(&store, "pos", Role::Cashier, limits(Some(500), None))
            .await
            .unwrap();
    let record = store.get_api_key(&id).await.unwrap().unwrap();
    assert_eq!(record.role, Role::Cashier);
    assert!(!record.revoked);
    assert_eq!(record.limits, limits(Some(500), None));
    let secret = key.rsplit('_').next().unwrap();
    assert!(
        !record.secret_hash.contains(secret),
        "only a hash is stored"
    );
    assert_eq!(record.secret_hash.len(), 64);
    store.revoke_api_key(&id).await.unwrap();
    assert!(store.get_api_key(&id).await.unwrap().unwrap().revoked);
    assert!(store.revoke_api_key(&id).await.is_err());
}

on_both_backends!(
    programs_round_trip_and_slugs_are_unique,
    templates_keep_design_and_images_and_version,
    members_get_unguessable_barcodes_and_passes,
    balance_never_goes_below_zero_under_concurrency,
    api_keys_store_hashes_and_revoke,
);
