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
    a_challenge_is_stored_with_its_deliveries_and_event_or_not_at_all,
    an_answer_its_proof_and_its_event_are_written_once,
    a_proof_recorded_in_a_transaction_goes_with_it,
    a_fetch_records_its_proof_in_the_read,
    a_challenge_is_read_with_the_key_that_asks,
    a_proof_id_is_recorded_once_and_never_for_a_revoked_device,
    push_targets_are_the_active_devices_with_the_recent_pushes,
    a_push_challenge_is_stored_only_while_its_snapshot_is_current,
    the_few_rows_of_many_are_found_through_partial_indexes,
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

fn challenge(id: &str) -> store::challenges::ChallengeRow {
    store::challenges::ChallengeRow {
        id: id.to_owned(),
        user_id: "usr_combined".to_owned(),
        factor: "push".to_owned(),
        status: "pending".to_owned(),
        reason: None,
        title: "Sign in".to_owned(),
        details: "[]".to_owned(),
        context: "{}".to_owned(),
        number: None,
        jws: Some("a.b.c".to_owned()),
        created_at: 1_000,
        expires_at: i64::MAX,
        decided_at: None,
        device_id: None,
        evidence: None,
        user_verified: None,
        api_key_id: "key_combined".to_owned(),
        idempotency_key: None,
        request_hash: None,
    }
}

fn event<'a>(id: &'a str, kind: &'a str) -> store::events::NewEvent<'a> {
    store::events::NewEvent { id, at: 1_000, kind, user_id: Some("usr_combined"), actor: "test", data: "{}" }
}

async fn count(store: &store::Store, sql: &str, key: &str) -> i64 {
    let (n,): (i64,) = db::query(sql.to_owned()).bind(key).fetch_one(store).await.unwrap();
    n
}

async fn a_challenge_is_stored_with_its_deliveries_and_event_or_not_at_all(db: Db) {
    use store::challenges::NewDelivery;
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    // Not `pending`: the push worker would pick that up and cancel it (there is no such device).
    let deliveries = [
        NewDelivery { device_id: "dev_a", provider: "fcm", status: "not_sent" },
        NewDelivery { device_id: "dev_b", provider: "none", status: "not_sent" },
    ];
    let mut tx = store.begin().await.unwrap();
    let created = event("evt_created", "challenge.created");
    store::challenges::insert(&mut tx, &challenge("chl_combined"), &deliveries, Some(&created)).await.unwrap();
    tx.commit().await.unwrap();

    let stored = store::challenges::deliveries(store, "chl_combined").await.unwrap();
    let mut seen: Vec<_> =
        stored.iter().map(|d| (d.device_id.as_str(), d.provider.as_str(), d.status.as_str())).collect();
    seen.sort_unstable();
    assert_eq!(seen, [("dev_a", "fcm", "not_sent"), ("dev_b", "none", "not_sent")]);
    assert_eq!(count(store, "SELECT COUNT(*) FROM events WHERE id = $1", "evt_created").await, 1);

    // The same id again: the insert fails as a whole, and its deliveries and event with it.
    let mut tx = store.begin().await.unwrap();
    let again = event("evt_again", "challenge.created");
    let failed = store::challenges::insert(&mut tx, &challenge("chl_combined"), &[deliveries[0]], Some(&again)).await;
    assert!(matches!(failed, Err(assent_server::error::Error::Database(e)) if e.is_unique_violation()));
    drop(tx);
    assert_eq!(count(store, "SELECT COUNT(*) FROM events WHERE id = $1", "evt_again").await, 0);
    assert_eq!(count(store, "SELECT COUNT(*) FROM push_deliveries WHERE challenge_id = $1", "chl_combined").await, 2);
}

async fn an_answer_its_proof_and_its_event_are_written_once(db: Db) {
    use store::challenges::{Answered, Verdict, decide_answer};
    use store::devices::ProofRefused;
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::challenges::insert(&mut tx, &challenge("chl_verdict"), &[], None).await.unwrap();
    store::devices::insert(&mut tx, &device("dev_a", "usr_a", 1_000)).await.unwrap();
    tx.commit().await.unwrap();

    let verdict = Verdict {
        id: "chl_verdict",
        status: "approved",
        reason: None,
        now: 70_000,
        device_id: Some("dev_a"),
        evidence: Some("x.y.z"),
        user_verified: Some(true),
    };
    let first = event("evt_first", "challenge.approved");
    let answered = decide_answer(store, &used("dev_a", "jti-a", 70_000, 10_000), &verdict, &first).await.unwrap();
    assert_eq!(answered, Answered::Decided);
    let row = store::challenges::get(store, "chl_verdict").await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.decided_at, row.device_id.as_deref(), row.user_verified),
        ("approved", Some(70_000), Some("dev_a"), Some(1))
    );
    assert_eq!(count(store, "SELECT COUNT(*) FROM events WHERE id = $1", "evt_first").await, 1);
    assert_eq!(proofs(store, "jti-a").await, 1);
    assert_eq!(last_seen(store, "dev_a").await, Some(70_000));

    // Decided already: the proof is spent, the challenge and the log stay as they were.
    let second = event("evt_second", "challenge.denied");
    let denied = Verdict { status: "denied", ..verdict };
    let answered = decide_answer(store, &used("dev_a", "jti-b", 71_000, 11_000), &denied, &second).await.unwrap();
    assert_eq!(answered, Answered::NotPending);
    assert_eq!(proofs(store, "jti-b").await, 1);
    assert_eq!(store::challenges::get(store, "chl_verdict").await.unwrap().unwrap().status, "approved");
    assert_eq!(count(store, "SELECT COUNT(*) FROM events WHERE id = $1", "evt_second").await, 0);

    // A pending challenge, answered with a spent proof, by a revoked device, by no device:
    // nothing is written.
    let mut tx = store.begin().await.unwrap();
    store::challenges::insert(&mut tx, &challenge("chl_open"), &[], None).await.unwrap();
    tx.commit().await.unwrap();
    let open = Verdict { id: "chl_open", ..verdict };
    let replayed = event("evt_replayed", "challenge.approved");
    let answered = decide_answer(store, &used("dev_a", "jti-a", 72_000, 12_000), &open, &replayed).await.unwrap();
    assert_eq!(answered, Answered::ProofRefused(ProofRefused::Replayed));
    let unknown = event("evt_unknown", "challenge.approved");
    let answered = decide_answer(store, &used("dev_nobody", "jti-c", 72_000, 12_000), &open, &unknown).await.unwrap();
    assert_eq!(answered, Answered::ProofRefused(ProofRefused::UnknownDevice));
    let mut tx = store.begin().await.unwrap();
    assert!(store::devices::revoke(&mut tx, "usr_a", "dev_a", 73_000).await.unwrap());
    tx.commit().await.unwrap();
    let revoked = event("evt_revoked", "challenge.approved");
    let answered = decide_answer(store, &used("dev_a", "jti-d", 200_000, 140_000), &open, &revoked).await.unwrap();
    assert_eq!(answered, Answered::ProofRefused(ProofRefused::Revoked));
    assert_eq!(store::challenges::get(store, "chl_open").await.unwrap().unwrap().status, "pending");
    for (id, jti) in [("evt_replayed", "jti-a"), ("evt_unknown", "jti-c"), ("evt_revoked", "jti-d")] {
        assert_eq!(count(store, "SELECT COUNT(*) FROM events WHERE id = $1", id).await, 0);
        assert_eq!(proofs(store, jti).await, i64::from(jti == "jti-a"));
    }
    assert_eq!(last_seen(store, "dev_a").await, Some(70_000));

    // Past its expiry a challenge is not decided either.
    let mut tx = store.begin().await.unwrap();
    store::devices::insert(&mut tx, &device("dev_b", "usr_b", 1_000)).await.unwrap();
    let mut late = challenge("chl_late");
    late.expires_at = 1_500;
    store::challenges::insert(&mut tx, &late, &[], None).await.unwrap();
    tx.commit().await.unwrap();
    let too_late = Verdict { id: "chl_late", now: 2_000, ..verdict };
    let answered =
        decide_answer(store, &used("dev_b", "jti-e", 2_000, 0), &too_late, &event("evt_late", "challenge.approved"))
            .await
            .unwrap();
    assert_eq!(answered, Answered::NotPending);
    assert_eq!(count(store, "SELECT COUNT(*) FROM events WHERE id = $1", "evt_late").await, 0);
}

/// No statement of the push cycle scans a whole table on PostgreSQL, whatever plan a
/// connection keeps: each is planned generically (as PostgreSQL may do after five runs of a
/// prepared statement) on the empty tables of a fresh database, where a bad plan looks
/// cheapest and then stays cached while the tables grow.
#[tokio::test]
async fn push_cycle_plans_never_scan_a_table() {
    use sqlx::Connection as _;
    let app = TestApp::new(Db::Postgres).await;
    let mut conn = sqlx::PgConnection::connect(&app.db.pg.as_ref().unwrap().url).await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan").execute(&mut conn).await.unwrap();
    let statements = store::challenges::push_cycle_statements();
    for (i, (name, sql)) in statements.iter().enumerate() {
        let plan = explain_prepared(&mut conn, &format!("s{i}"), sql, &[]).await;
        assert!(plan.contains("Index"), "{name}: no index used?\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{name} scans a table:\n{plan}");
    }
    assert_eq!(statements.len(), 8);
}

/// PostgreSQL's plan for `sql` prepared as `name` and run with every parameter NULL. The
/// parameters are of `types`, or, with none given, untyped and as many as `sql` uses.
async fn explain_prepared(conn: &mut sqlx::PgConnection, name: &str, sql: &str, types: &[&str]) -> String {
    let (declared, params) = if types.is_empty() {
        let params = sql
            .split('$')
            .skip(1)
            .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        (String::new(), params)
    } else {
        (format!("({})", types.join(", ")), types.len())
    };
    sqlx::raw_sql(&format!("PREPARE {name}{declared} AS {sql}")).execute(&mut *conn).await.unwrap();
    let nulls = vec!["NULL"; params].join(", ");
    let lines: Vec<(String,)> =
        sqlx::query_as(&format!("EXPLAIN EXECUTE {name}({nulls})")).fetch_all(&mut *conn).await.unwrap();
    lines.into_iter().map(|(line,)| line).collect::<Vec<_>>().join("\n")
}

/// The expiry sweep, the push worker's claim and the idempotent create's lookup each use
/// their partial index (migration 0007), which holds only the rows they look for: on
/// PostgreSQL even in a generic plan made on empty tables, where a scan looks cheapest.
async fn the_few_rows_of_many_are_found_through_partial_indexes(db: Db) {
    use sqlx::Connection as _;
    let app = TestApp::new(db).await;
    let backend = app.state.store.backend();
    let mut pg = match &app.db.pg {
        Some(pg) => {
            let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
            sqlx::raw_sql("SET plan_cache_mode = force_generic_plan").execute(&mut conn).await.unwrap();
            Some(conn)
        }
        None => None,
    };
    let statements = store::challenges::partial_index_statements(backend);
    for (i, (index, sql)) in statements.iter().enumerate() {
        let plan = match &mut pg {
            Some(conn) => {
                // Typed: `$2 IS NULL` comes before any use that would tell PostgreSQL its type.
                let types: &[&str] = match *index {
                    "challenges_idempotency" => &["text", "text"],
                    "challenges_pending" => &["bigint", "text"],
                    _ => &["bigint", "bigint", "bigint"],
                };
                explain_prepared(conn, &format!("s{i}"), sql, types).await
            }
            None => {
                let rows: Vec<(i64, i64, i64, String)> =
                    db::query(format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(&app.state.store).await.unwrap();
                rows.into_iter().map(|(.., line)| line).collect::<Vec<_>>().join("\n")
            }
        };
        assert!(plan.contains(index), "{index} not used:\n{plan}");
        assert!(!plan.contains("Seq Scan") && !plan.contains("SCAN "), "a scan:\n{plan}");
        let definition = match backend {
            store::Backend::Postgres => "SELECT indexdef FROM pg_indexes WHERE indexname = $1",
            store::Backend::Sqlite => "SELECT sql FROM sqlite_master WHERE name = $1",
        };
        let (definition,): (String,) = db::query(definition).bind(*index).fetch_one(&app.state.store).await.unwrap();
        assert!(definition.contains("WHERE"), "{index} is not partial: {definition}");
    }
    assert_eq!(statements.len(), 3);
}

/// On PostgreSQL a decided answer is announced (`NOTIFY`) at its commit, for the long-polls
/// of other replicas; an answer that decides nothing is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_answer_is_announced_to_other_replicas() {
    use store::challenges::{Answered, Verdict, decide_answer};
    let app = TestApp::new(Db::Postgres).await;
    let store = &app.state.store;
    let mut listener = sqlx::postgres::PgListener::connect(&app.db.pg.as_ref().unwrap().url).await.unwrap();
    listener.listen("assent_challenges").await.unwrap();
    let mut tx = store.begin().await.unwrap();
    store::devices::insert(&mut tx, &device("dev_n", "usr_n", 1_000)).await.unwrap();
    store::challenges::insert(&mut tx, &challenge("chl_first"), &[], None).await.unwrap();
    store::challenges::insert(&mut tx, &challenge("chl_second"), &[], None).await.unwrap();
    tx.commit().await.unwrap();
    let next = async |listener: &mut sqlx::postgres::PgListener| {
        let note = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv()).await;
        note.expect("a notification").unwrap().payload().to_owned()
    };
    let verdict = |id| Verdict {
        id,
        status: "approved",
        reason: None,
        now: 70_000,
        device_id: Some("dev_n"),
        evidence: Some("x.y.z"),
        user_verified: Some(true),
    };
    let answer = async |id, jti, event_id| {
        let event = event(event_id, "challenge.approved");
        decide_answer(store, &used("dev_n", jti, 70_000, 10_000), &verdict(id), &event).await.unwrap()
    };

    assert_eq!(answer("chl_first", "jti-1", "evt_1").await, Answered::Decided);
    assert_eq!(next(&mut listener).await, "chl_first");
    // Neither of these announces anything: the next notification is the second decision's.
    assert_eq!(answer("chl_first", "jti-2", "evt_2").await, Answered::NotPending);
    assert!(matches!(answer("chl_second", "jti-1", "evt_3").await, Answered::ProofRefused(_)));
    assert_eq!(answer("chl_second", "jti-3", "evt_4").await, Answered::Decided);
    assert_eq!(next(&mut listener).await, "chl_second");
}

/// How many times the proof id `jti` is recorded.
async fn proofs(store: &store::Store, jti: &str) -> i64 {
    count(store, "SELECT COUNT(*) FROM proof_jtis WHERE jti = $1", jti).await
}

/// A proof of `device_id` with id `jti`, kept past the real clock (the cleanup worker deletes
/// expired ids while a test runs).
fn used<'a>(device_id: &'a str, jti: &'a str, now: i64, seen_before: i64) -> store::devices::ProofUse<'a> {
    store::devices::ProofUse { device_id, jti, keep_until: i64::MAX, now, seen_before }
}

async fn a_proof_recorded_in_a_transaction_goes_with_it(db: Db) {
    use store::devices::{ProofRefused, record_proof};
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::devices::insert(&mut tx, &device("dev_tx", "usr_tx", 1_000)).await.unwrap();
    tx.commit().await.unwrap();

    // Rolled back with its transaction.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(record_proof(&mut tx, &used("dev_tx", "jti-1", 70_000, 10_000)).await.unwrap(), Ok(()));
    drop(tx);
    assert_eq!(proofs(store, "jti-1").await, 0);
    assert_eq!(last_seen(store, "dev_tx").await, Some(1_000));

    // Committed with it; then a replay, even in the same transaction.
    let mut tx = store.begin().await.unwrap();
    assert_eq!(record_proof(&mut tx, &used("dev_tx", "jti-1", 70_000, 10_000)).await.unwrap(), Ok(()));
    let again = record_proof(&mut tx, &used("dev_tx", "jti-1", 70_000, 10_000)).await.unwrap();
    assert_eq!(again, Err(ProofRefused::Replayed));
    tx.commit().await.unwrap();
    assert_eq!(proofs(store, "jti-1").await, 1);
    assert_eq!(last_seen(store, "dev_tx").await, Some(70_000));
    let mut tx = store.begin().await.unwrap();
    let replayed = record_proof(&mut tx, &used("dev_tx", "jti-1", 200_000, 140_000)).await.unwrap();
    assert_eq!(replayed, Err(ProofRefused::Replayed));
    // Seen within the minute: last_seen_at stays.
    assert_eq!(record_proof(&mut tx, &used("dev_tx", "jti-2", 71_000, 11_000)).await.unwrap(), Ok(()));
    tx.commit().await.unwrap();
    assert_eq!(last_seen(store, "dev_tx").await, Some(70_000));

    let mut tx = store.begin().await.unwrap();
    let nobody = record_proof(&mut tx, &used("dev_nobody", "jti-3", 70_000, 10_000)).await.unwrap();
    assert_eq!(nobody, Err(ProofRefused::UnknownDevice));
    assert!(store::devices::revoke(&mut tx, "usr_tx", "dev_tx", 80_000).await.unwrap());
    let revoked = record_proof(&mut tx, &used("dev_tx", "jti-4", 300_000, 240_000)).await.unwrap();
    assert_eq!(revoked, Err(ProofRefused::Revoked));
    tx.commit().await.unwrap();
    assert_eq!((proofs(store, "jti-3").await, proofs(store, "jti-4").await), (0, 0));
    assert_eq!(last_seen(store, "dev_tx").await, Some(70_000));
}

async fn a_fetch_records_its_proof_in_the_read(db: Db) {
    use store::challenges::{NewDelivery, get_addressed_to_with_proof};
    use store::devices::{ProofRefused, ProofUse};
    // The id of what was read, or why the proof was refused.
    async fn fetch(store: &store::Store, proof: &ProofUse<'_>, id: &str) -> Result<Option<String>, ProofRefused> {
        get_addressed_to_with_proof(store, proof, id).await.unwrap().map(|found| found.map(|row| row.id))
    }
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::devices::insert(&mut tx, &device("dev_mine", "usr_combined", 1_000)).await.unwrap();
    store::devices::insert(&mut tx, &device("dev_other", "usr_combined", 1_000)).await.unwrap();
    let to_mine = [NewDelivery { device_id: "dev_mine", provider: "none", status: "not_sent" }];
    store::challenges::insert(&mut tx, &challenge("chl_mine"), &to_mine, None).await.unwrap();
    let to_other = [NewDelivery { device_id: "dev_other", provider: "none", status: "not_sent" }];
    store::challenges::insert(&mut tx, &challenge("chl_other"), &to_other, None).await.unwrap();
    tx.commit().await.unwrap();

    // Addressed to the device: read, the proof recorded and last_seen_at moved.
    let read = get_addressed_to_with_proof(store, &used("dev_mine", "jti-f1", 70_000, 10_000), "chl_mine").await;
    let row = read.unwrap().unwrap().unwrap();
    assert_eq!((row.id.as_str(), row.status.as_str(), row.user_id.as_str()), ("chl_mine", "pending", "usr_combined"));
    assert_eq!((row.jws, row.expires_at), (Some("a.b.c".to_owned()), i64::MAX));
    assert_eq!((proofs(store, "jti-f1").await, last_seen(store, "dev_mine").await), (1, Some(70_000)));

    // The same proof again: refused, and nothing is read.
    let replayed = fetch(store, &used("dev_mine", "jti-f1", 71_000, 11_000), "chl_mine").await;
    assert_eq!(replayed, Err(ProofRefused::Replayed));

    // Not addressed to the device, or no such challenge: nothing to read, the proof spent.
    let other = fetch(store, &used("dev_mine", "jti-f2", 72_000, 12_000), "chl_other").await;
    assert_eq!(other, Ok(None));
    let missing = fetch(store, &used("dev_mine", "jti-f3", 72_000, 12_000), "chl_missing").await;
    assert_eq!(missing, Ok(None));
    assert_eq!((proofs(store, "jti-f2").await, proofs(store, "jti-f3").await), (1, 1));
    // Seen within the minute: last_seen_at stays.
    assert_eq!(last_seen(store, "dev_mine").await, Some(70_000));

    // Unknown and revoked devices: refused, nothing written.
    let nobody = fetch(store, &used("dev_nobody", "jti-f4", 80_000, 20_000), "chl_mine").await;
    assert_eq!(nobody, Err(ProofRefused::UnknownDevice));
    let mut tx = store.begin().await.unwrap();
    assert!(store::devices::revoke(&mut tx, "usr_combined", "dev_other", 80_000).await.unwrap());
    tx.commit().await.unwrap();
    let revoked = fetch(store, &used("dev_other", "jti-f5", 300_000, 240_000), "chl_other").await;
    assert_eq!(revoked, Err(ProofRefused::Revoked));
    assert_eq!((proofs(store, "jti-f4").await, proofs(store, "jti-f5").await), (0, 0));
    assert_eq!(last_seen(store, "dev_other").await, Some(1_000));
}

async fn a_challenge_is_read_with_the_key_that_asks(db: Db) {
    use store::challenges::{NewDelivery, get_with_deliveries_and_key as read};
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::api_keys::insert(&mut tx, "key_reader", "reader", "hash-r", 1).await.unwrap();
    store::api_keys::insert(&mut tx, "key_gone", "gone", "hash-g", 1).await.unwrap();
    assert!(store::api_keys::revoke(&mut tx, "key_gone", 5).await.unwrap());
    let to = [
        NewDelivery { device_id: "dev_b", provider: "none", status: "not_sent" },
        NewDelivery { device_id: "dev_a", provider: "apns", status: "pending" },
    ];
    store::challenges::insert(&mut tx, &challenge("chl_two"), &to, None).await.unwrap();
    store::challenges::insert(&mut tx, &challenge("chl_none"), &[], None).await.unwrap();
    tx.commit().await.unwrap();

    let (key, found) = read(store.reader(), "chl_two", "key_reader").await.unwrap();
    let key = key.unwrap();
    assert_eq!((key.hash.as_str(), key.revoked_at), ("hash-r", None));
    let (row, deliveries) = found.unwrap();
    assert_eq!(row.id, "chl_two");
    let devices: Vec<_> = deliveries.iter().map(|d| (d.device_id.as_str(), d.provider.as_str())).collect();
    assert_eq!(devices, [("dev_a", "apns"), ("dev_b", "none")]);
    // The same as the read without the key.
    let (_, alone) = store::challenges::get_with_deliveries(store.reader(), "chl_two").await.unwrap().unwrap();
    assert_eq!(alone.len(), deliveries.len());

    let (_, found) = read(store.reader(), "chl_none", "key_reader").await.unwrap();
    let (row, deliveries) = found.unwrap();
    assert_eq!((row.id.as_str(), deliveries.len()), ("chl_none", 0));
    // No such challenge: the key all the same.
    let (key, found) = read(store.reader(), "chl_missing", "key_reader").await.unwrap();
    assert_eq!((key.unwrap().hash.as_str(), found.is_none()), ("hash-r", true));
    // A revoked key says so; no such key, nothing at all.
    let (key, _) = read(store.reader(), "chl_two", "key_gone").await.unwrap();
    assert_eq!(key.unwrap().revoked_at, Some(5));
    let (key, found) = read(store.reader(), "chl_two", "key_nobody").await.unwrap();
    assert!(key.is_none() && found.is_none());
}

fn device(id: &str, user_id: &str, created_at: i64) -> store::devices::DeviceRow {
    store::devices::DeviceRow {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        name: "phone".to_owned(),
        platform: "other".to_owned(),
        jwk: "{}".to_owned(),
        thumbprint: format!("tp-{id}"),
        push_provider: "none".to_owned(),
        push_token: None,
        created_at,
        last_seen_at: Some(created_at),
        revoked_at: None,
    }
}

async fn last_seen(store: &store::Store, id: &str) -> Option<i64> {
    store::devices::get(store, id).await.unwrap().unwrap().last_seen_at
}

async fn a_proof_id_is_recorded_once_and_never_for_a_revoked_device(db: Db) {
    use store::devices::check_proof;
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::devices::insert(&mut tx, &device("dev_proof", "usr_proof", 1_000)).await.unwrap();
    tx.commit().await.unwrap();

    // New id, last seen long enough ago: recorded, and last_seen_at moves.
    let first = check_proof(store, &used("dev_proof", "jti-1", 70_000, 10_000)).await.unwrap().unwrap();
    assert!(first.fresh);
    assert_eq!((first.device.id.as_str(), first.device.last_seen_at), ("dev_proof", Some(1_000)));
    assert_eq!(last_seen(store, "dev_proof").await, Some(70_000));

    // The same id again is a replay; a new one seen recently leaves last_seen_at alone.
    assert!(!check_proof(store, &used("dev_proof", "jti-1", 71_000, 11_000)).await.unwrap().unwrap().fresh);
    assert!(check_proof(store, &used("dev_proof", "jti-2", 72_000, 12_000)).await.unwrap().unwrap().fresh);
    assert_eq!(last_seen(store, "dev_proof").await, Some(70_000));

    // A replay does not move last_seen_at even when it is due.
    assert!(!check_proof(store, &used("dev_proof", "jti-2", 200_000, 140_000)).await.unwrap().unwrap().fresh);
    assert_eq!(last_seen(store, "dev_proof").await, Some(70_000));

    // Revoked: reported as such, and neither the id nor the time is written.
    let mut tx = store.begin().await.unwrap();
    assert!(store::devices::revoke(&mut tx, "usr_proof", "dev_proof", 80_000).await.unwrap());
    tx.commit().await.unwrap();
    let revoked = check_proof(store, &used("dev_proof", "jti-3", 300_000, 240_000)).await.unwrap().unwrap();
    assert_eq!((revoked.device.revoked_at, revoked.fresh), (Some(80_000), false));
    assert_eq!(count(store, "SELECT COUNT(*) FROM proof_jtis WHERE jti = $1", "jti-3").await, 0);
    assert_eq!(last_seen(store, "dev_proof").await, Some(70_000));

    assert!(check_proof(store, &used("dev_nobody", "jti-4", 1, 0)).await.unwrap().is_none());
    assert_eq!(count(store, "SELECT COUNT(*) FROM proof_jtis WHERE jti = $1", "jti-4").await, 0);
}

fn user(id: &str) -> store::users::UserRow {
    store::users::UserRow {
        id: id.to_owned(),
        display_name: None,
        phone: None,
        phone_verified: 0,
        email: None,
        email_verified: 0,
        created_at: 1_000,
        updated_at: 1_000,
    }
}

async fn push_targets_are_the_active_devices_with_the_recent_pushes(db: Db) {
    use store::challenges::push_snapshot;
    let app = TestApp::new(db).await;
    let store = &app.state.store;
    let mut tx = store.begin().await.unwrap();
    store::users::upsert(&mut tx, &user("usr_combined")).await.unwrap();
    store::devices::insert(&mut tx, &device("dev_new", "usr_combined", 2_000)).await.unwrap();
    store::devices::insert(&mut tx, &device("dev_old", "usr_combined", 1_000)).await.unwrap();
    store::devices::insert(&mut tx, &device("dev_gone", "usr_combined", 1_500)).await.unwrap();
    assert!(store::devices::revoke(&mut tx, "usr_combined", "dev_gone", 3_000).await.unwrap());
    // Pushes at 1,000 (before the window), 5,000 (decided), 6,000 (pending), 7,000 (pending,
    // expired), and a code at 8,000 (not a push).
    for (id, at, status, expires_at, factor) in [
        ("chl_before", 1_000, "approved", 50_000, "push"),
        ("chl_decided", 5_000, "denied", 50_000, "push"),
        ("chl_live", 6_000, "pending", 50_000, "push"),
        ("chl_lapsed", 7_000, "pending", 9_000, "push"),
        ("chl_code", 8_000, "pending", 50_000, "sms"),
    ] {
        let mut row = challenge(id);
        (row.created_at, row.status, row.expires_at, row.factor) =
            (at, status.to_owned(), expires_at, factor.to_owned());
        store::challenges::insert(&mut tx, &row, &[], None).await.unwrap();
    }
    let locked = store::challenges::lock_user(&mut tx, "usr_combined").await.unwrap().unwrap();
    assert_eq!(locked.push_locked_at, None);
    let snapshot = push_snapshot(&mut tx, "usr_combined", 2_000, 10, 10_000).await.unwrap().unwrap();
    let ids: Vec<_> = snapshot.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["dev_old", "dev_new"]);
    let pushes: Vec<_> = snapshot.recent.iter().map(|r| (r.created_at, r.live_pending)).collect();
    assert_eq!(pushes, [(7_000, false), (6_000, true), (5_000, false)]);
    assert_eq!((snapshot.seq, snapshot.push_locked), (1, false));

    // Newest first, at most `limit`.
    let snapshot = push_snapshot(&mut tx, "usr_combined", 2_000, 2, 10_000).await.unwrap().unwrap();
    assert_eq!(snapshot.recent.iter().map(|r| r.created_at).collect::<Vec<_>>(), [7_000, 6_000]);

    assert!(push_snapshot(&mut tx, "usr_nobody", 0, 10, 10_000).await.unwrap().is_none());
    tx.commit().await.unwrap();

    // Outside a transaction it reads the same; a fraud report shows.
    let mut tx = store.begin().await.unwrap();
    assert!(store::challenges::set_push_lock(&mut tx, "usr_combined", Some(9_000)).await.unwrap());
    tx.commit().await.unwrap();
    let snapshot = push_snapshot(store.reader(), "usr_combined", 2_000, 10, 10_000).await.unwrap().unwrap();
    assert_eq!((snapshot.devices.len(), snapshot.recent.len(), snapshot.seq, snapshot.push_locked), (2, 3, 1, true));

    // With the API key that asks, in the same read: as stored, or None when there is none.
    let mut tx = store.begin().await.unwrap();
    store::api_keys::insert(&mut tx, "key_snap", "snap", "hash-s", 1).await.unwrap();
    tx.commit().await.unwrap();
    let with_key = |key_id: &'static str| {
        store::challenges::push_snapshot_and_key(store.reader(), "usr_combined", 2_000, 10, 10_000, key_id)
    };
    let (snapshot, key) = with_key("key_snap").await.unwrap().unwrap();
    assert_eq!((snapshot.devices.len(), snapshot.recent.len(), snapshot.seq, snapshot.push_locked), (2, 3, 1, true));
    let key = key.unwrap();
    assert_eq!((key.hash.as_str(), key.revoked_at), ("hash-s", None));
    let (_, key) = with_key("key_nobody").await.unwrap().unwrap();
    assert!(key.is_none());
    let no_device = store::challenges::push_snapshot_and_key(store.reader(), "usr_nobody", 0, 10, 10_000, "key_snap");
    assert!(no_device.await.unwrap().is_none());
}

async fn a_push_challenge_is_stored_only_while_its_snapshot_is_current(db: Db) {
    use store::challenges::{NewDelivery, insert_unless_changed, push_snapshot};
    let app = TestApp::new(db).await;
    let store = app.state.store.clone();
    let mut tx = store.begin().await.unwrap();
    store::users::upsert(&mut tx, &user("usr_combined")).await.unwrap();
    store::devices::insert(&mut tx, &device("dev_one", "usr_combined", 1_000)).await.unwrap();
    tx.commit().await.unwrap();
    let deliveries = [NewDelivery { device_id: "dev_one", provider: "none", status: "not_sent" }];
    let seq = push_snapshot(&store, "usr_combined", 0, 10, 2_000).await.unwrap().unwrap().seq;

    let first = event("evt_first", "challenge.created");
    assert!(insert_unless_changed(&store, seq, &challenge("chl_first"), &deliveries, &first).await.unwrap());
    assert_eq!(count(&store, "SELECT COUNT(*) FROM push_deliveries WHERE challenge_id = $1", "chl_first").await, 1);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM events WHERE id = $1", "evt_first").await, 1);
    let snapshot = push_snapshot(&store, "usr_combined", 0, 10, 2_000).await.unwrap().unwrap();
    assert_eq!((snapshot.seq, snapshot.recent.len()), (seq + 1, 1));

    // The same snapshot again: the first insert moved the sequence, so nothing is written.
    let stale = event("evt_stale", "challenge.created");
    assert!(!insert_unless_changed(&store, seq, &challenge("chl_stale"), &deliveries, &stale).await.unwrap());
    for (sql, key) in [
        ("SELECT COUNT(*) FROM challenges WHERE id = $1", "chl_stale"),
        ("SELECT COUNT(*) FROM push_deliveries WHERE challenge_id = $1", "chl_stale"),
        ("SELECT COUNT(*) FROM events WHERE id = $1", "evt_stale"),
    ] {
        assert_eq!(count(&store, sql, key).await, 0, "{sql}");
    }

    // A challenge created under the lock while the insert waits for it: once it commits the
    // snapshot is stale, whichever of the two reached the user's row first.
    let seq = seq + 1;
    let mut tx = store.begin().await.unwrap();
    store::challenges::lock_user(&mut tx, "usr_combined").await.unwrap().unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move {
            let raced = event("evt_raced", "challenge.created");
            insert_unless_changed(&store, seq, &challenge("chl_raced"), &[], &raced).await.unwrap()
        }
    });
    tokio::task::yield_now().await;
    tx.commit().await.unwrap();
    assert!(!waiting.await.unwrap());
    assert_eq!(count(&store, "SELECT COUNT(*) FROM challenges WHERE id = $1", "chl_raced").await, 0);

    // A fraud report does not move the sequence, but refuses the insert all the same.
    let seq = seq + 1;
    let mut tx = store.begin().await.unwrap();
    assert!(store::challenges::set_push_lock(&mut tx, "usr_combined", Some(3_000)).await.unwrap());
    tx.commit().await.unwrap();
    let locked = event("evt_locked", "challenge.created");
    assert!(!insert_unless_changed(&store, seq, &challenge("chl_locked"), &[], &locked).await.unwrap());
    assert_eq!(count(&store, "SELECT COUNT(*) FROM challenges WHERE id = $1", "chl_locked").await, 0);

    // A reused idempotency key fails as a unique violation, for the caller to replay.
    let mut tx = store.begin().await.unwrap();
    assert!(store::challenges::set_push_lock(&mut tx, "usr_combined", None).await.unwrap());
    tx.commit().await.unwrap();
    let mut keyed = challenge("chl_keyed");
    keyed.idempotency_key = Some("key-1".to_owned());
    let once = event("evt_keyed", "challenge.created");
    assert!(insert_unless_changed(&store, seq, &keyed, &[], &once).await.unwrap());
    keyed.id = "chl_keyed_again".to_owned();
    let twice = event("evt_keyed_again", "challenge.created");
    let failed = insert_unless_changed(&store, seq + 1, &keyed, &[], &twice).await;
    assert!(matches!(failed, Err(assent_server::error::Error::Database(e)) if e.is_unique_violation()));
    assert_eq!(count(&store, "SELECT COUNT(*) FROM events WHERE id = $1", "evt_keyed_again").await, 0);
}
