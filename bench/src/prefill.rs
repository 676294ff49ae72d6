//! History for the flatness runs: users with enrolled devices, and past challenges with their
//! deliveries and audit events, written straight into a migrated database before the server
//! starts. Enrolling 100,000 phones and deciding 1,000,000 challenges through the API would take
//! longer than the measurement itself; these rows are shaped like the ones the server writes.
//!
//! Portable SQL (SQLite and PostgreSQL), one recursive series per batch. The test below runs it
//! against the real migrations, so a schema change that breaks it fails `cargo test`.

use std::time::Instant;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// Rows per statement.
const BATCH: i64 = 20_000;

/// A real P-256 public key (never used to sign: the prefilled devices only take up space).
const JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

/// Writes `devices` users with one device each and `challenges` decided challenges spread over
/// them, each with a delivery row and two audit events.
pub async fn prefill(database_url: &str, devices: i64, challenges: i64) -> anyhow::Result<()> {
    if devices == 0 && challenges == 0 {
        return Ok(());
    }
    anyhow::ensure!(devices > 0, "past challenges need devices to belong to");
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new().max_connections(1).connect(database_url).await?;
    let now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis())?;
    let started = Instant::now();
    batches(&pool, devices, |from, to| {
        vec![
            format!(
                "INSERT INTO users (id, display_name, created_at, updated_at, challenge_seq) {} \
                 SELECT 'prefill-' || CAST(i AS TEXT), 'Prefilled user', {now}, {now}, 0 FROM n",
                series(from, to)
            ),
            format!(
                "INSERT INTO devices (id, user_id, name, platform, jwk, thumbprint, push_provider, created_at, last_seen_at) {} \
                 SELECT 'dev_prefill' || CAST(i AS TEXT), 'prefill-' || CAST(i AS TEXT), 'Prefilled phone', 'other', \
                 '{JWK}', 'prefill-' || CAST(i AS TEXT), 'none', {now}, {now} FROM n",
                series(from, to)
            ),
        ]
    })
    .await?;
    eprintln!("prefilled {devices} users and devices in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    // Spread over the last 30 days, oldest first; user = challenge number modulo devices.
    let span = 30 * 24 * 3600 * 1000_i64;
    let step = (span / challenges.max(1)).max(1);
    batches(&pool, challenges, |from, to| {
        let at = format!("({now} - {span} + i * {step})");
        let user = format!("'prefill-' || CAST((i % {devices}) + 1 AS TEXT)");
        let device = format!("'dev_prefill' || CAST((i % {devices}) + 1 AS TEXT)");
        vec![
            format!(
                "INSERT INTO challenges (id, user_id, factor, status, title, details, context, number, created_at, \
                 expires_at, decided_at, device_id, user_verified, api_key_id) {} \
                 SELECT 'chl_prefill' || CAST(i AS TEXT), {user}, 'push', 'approved', 'Sign in', '[]', '{{}}', 42, \
                 {at}, {at} + 300000, {at} + 4000, {device}, 1, 'key_prefill' FROM n",
                series(from, to)
            ),
            format!(
                "INSERT INTO push_deliveries (challenge_id, device_id, provider, status, attempts, next_attempt_at, \
                 updated_at) {} \
                 SELECT 'chl_prefill' || CAST(i AS TEXT), {device}, 'none', 'not_sent', 0, {at}, {at} FROM n",
                series(from, to)
            ),
            format!(
                "INSERT INTO events (id, at, kind, user_id, actor, data) {} \
                 SELECT 'evt_prefill' || CAST(i AS TEXT) || 'c', {at}, 'challenge.created', {user}, 'key_prefill', \
                 '{{\"challenge_id\":\"chl_prefill' || CAST(i AS TEXT) || '\"}}' FROM n",
                series(from, to)
            ),
            format!(
                "INSERT INTO events (id, at, kind, user_id, actor, data) {} \
                 SELECT 'evt_prefill' || CAST(i AS TEXT) || 'a', {at} + 4000, 'challenge.approved', {user}, \
                 {device}, '{{\"challenge_id\":\"chl_prefill' || CAST(i AS TEXT) || '\"}}' FROM n",
                series(from, to)
            ),
        ]
    })
    .await?;
    if challenges > 0 {
        eprintln!("prefilled {challenges} past challenges in {:.1} s", started.elapsed().as_secs_f64());
    }
    // Fresh statistics, as a long-running database would have.
    let analyze = if database_url.starts_with("sqlite") { "ANALYZE" } else { "VACUUM ANALYZE" };
    sqlx::query(analyze).execute(&pool).await?;
    pool.close().await;
    Ok(())
}

/// `WITH RECURSIVE n(i)` counting from `from` to `to` inclusive.
fn series(from: i64, to: i64) -> String {
    format!("WITH RECURSIVE n(i) AS (SELECT CAST({from} AS BIGINT) UNION ALL SELECT i + 1 FROM n WHERE i < {to})")
}

async fn batches(pool: &AnyPool, total: i64, statements: impl Fn(i64, i64) -> Vec<String>) -> anyhow::Result<()> {
    let mut from = 1;
    while from <= total {
        let to = (from + BATCH - 1).min(total);
        let mut tx = pool.begin().await?;
        for sql in statements(from, to) {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        from = to + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use assent_server::store::{self, Store};
    use assent_tests::PgDatabase;

    /// The prefilled rows fit the real schema, and the server's own store reads them.
    async fn prefill_fits_the_schema(url: &str) {
        let store = Store::connect(url, 2).await.unwrap();
        store.migrate().await.unwrap();
        super::prefill(url, 30, 100).await.unwrap();
        let device = store::devices::get(store.reader(), "dev_prefill7").await.unwrap().unwrap();
        assert_eq!(device.user_id, "prefill-7");
        assert!(assent_server::devices::device_key(&device).is_ok());
        let challenge = store::challenges::get(store.reader(), "chl_prefill100").await.unwrap().unwrap();
        assert_eq!((challenge.user_id.as_str(), challenge.status.as_str()), ("prefill-11", "approved"));
        let (events,): (i64,) =
            store::db::query("SELECT COUNT(*) FROM events").fetch_one(store.reader()).await.unwrap();
        assert_eq!(events, 200);
    }

    #[tokio::test]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        prefill_fits_the_schema(&format!("sqlite://{}", dir.path().join("assent.db").display())).await;
    }

    #[tokio::test]
    async fn postgres() {
        let db = PgDatabase::create().await;
        prefill_fits_the_schema(&db.url).await;
    }
}
