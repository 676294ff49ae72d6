//! The statement layer's guarantees, on both databases: what a transaction does when it is
//! dropped, committed or refused, and what reads see meanwhile.

use assent_server::store::{self, db};

use crate::both_databases;
use crate::support::{Db, TestApp};

both_databases!(
    dropped_transaction_rolls_back,
    reads_see_only_committed_writes,
    unique_violations_are_recognised,
    parameters_bind_by_number,
    closed_store_refuses_work,
);

async fn count_keys(store: &store::Store, name: &str) -> i64 {
    let (n,): (i64,) =
        db::query("SELECT COUNT(*) FROM api_keys WHERE name = $1").bind(name).fetch_one(store).await.unwrap();
    n
}

async fn dropped_transaction_rolls_back(db: Db) {
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::api_keys::insert(&mut tx, "key_dropped", "dropped", "h", 1).await.unwrap();
    drop(tx);
    assert_eq!(count_keys(store, "dropped").await, 0);

    // The writer is free again, and an explicit rollback does the same.
    let mut tx = store.begin().await.unwrap();
    store::api_keys::insert(&mut tx, "key_rolled", "rolled", "h", 1).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count_keys(store, "rolled").await, 0);

    let mut tx = store.begin().await.unwrap();
    store::api_keys::insert(&mut tx, "key_kept", "kept", "h", 1).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count_keys(store, "kept").await, 1);
}

async fn reads_see_only_committed_writes(db: Db) {
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::api_keys::insert(&mut tx, "key_pending", "pending", "h", 1).await.unwrap();
    // Inside the transaction the row is there; outside it is not yet.
    assert!(store::api_keys::get(&mut tx, "key_pending").await.unwrap().is_some());
    assert!(store::api_keys::get(store.reader(), "key_pending").await.unwrap().is_none());
    tx.commit().await.unwrap();
    let row = store::api_keys::get(store.reader(), "key_pending").await.unwrap().unwrap();
    assert_eq!((row.name.as_str(), row.revoked_at), ("pending", None));
}

async fn unique_violations_are_recognised(db: Db) {
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::api_keys::insert(&mut tx, "key_twice", "a", "h", 1).await.unwrap();
    let again = store::api_keys::insert(&mut tx, "key_twice", "b", "h", 1).await.unwrap_err();
    assert!(matches!(&again, assent_server::error::Error::Database(e) if e.is_unique_violation()), "{again:?}");
    // Any other failure is not mistaken for one.
    let other = db::query("INSERT INTO no_such_table VALUES ($1)").bind(1_i64).execute(&mut tx).await.unwrap_err();
    assert!(!matches!(&other, assent_server::error::Error::Database(e) if e.is_unique_violation()));
}

async fn parameters_bind_by_number(db: Db) {
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    // $2 used before $1, $1 used twice, NULLs of both kinds.
    let (a, b, c, d): (String, i64, Option<String>, Option<i64>) =
        db::query("SELECT $2 || '-' || $1, $3 + $3, CASE WHEN $1 = 'x' THEN $4 END, CASE WHEN $1 = 'x' THEN $5 END")
            .bind("x")
            .bind("y")
            .bind(20_i64)
            .bind(None::<&str>)
            .bind(None::<i64>)
            .fetch_one(store)
            .await
            .unwrap();
    assert_eq!((a.as_str(), b, c, d), ("y-x", 40, None, None));
}

async fn closed_store_refuses_work(db: Db) {
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    store.close().await;
    assert!(store.ping().await.is_err());
    assert!(store.begin().await.is_err());
}
