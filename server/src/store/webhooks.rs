//! The webhook outbox: rows written in the same transaction as the event, claimed by workers
//! under a lease so no two workers (on any replicas) send the same row at once.

use super::{Tx, db};

use super::Backend;
use crate::error::Result;

crate::row! {
    /// An outbox row.
    #[derive(Debug, Clone)]
    pub struct OutboxRow {
        /// The message id (`webhook-id`).
        pub id: String,
        /// The endpoint URL.
        pub endpoint: String,
        /// Event type.
        pub kind: String,
        /// Exact JSON body.
        pub payload: String,
        /// Attempts so far.
        pub attempts: i64,
        /// Unix ms of creation.
        pub created_at: i64,
    }
}

/// Queues a message.
pub async fn enqueue(conn: &mut Tx, id: &str, endpoint: &str, kind: &str, payload: &str, now: i64) -> Result<()> {
    db::query(
        "INSERT INTO webhook_outbox (id, endpoint, kind, payload, status, next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
    )
    .bind(id)
    .bind(endpoint)
    .bind(kind)
    .bind(payload)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Claims up to `limit` due messages until `lease_until`.
pub async fn claim_due(
    conn: &mut Tx,
    backend: Backend,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    let sql = format!(
        "UPDATE webhook_outbox SET claimed_until = $1
         WHERE id IN (SELECT id FROM webhook_outbox
                      WHERE status = 'pending' AND next_attempt_at <= $2 AND claimed_until <= $2
                      ORDER BY next_attempt_at LIMIT $3 {})
         RETURNING id, endpoint, kind, payload, attempts, created_at",
        backend.skip_locked()
    );
    db::query(&sql).bind(lease_until).bind(now).bind(limit).fetch_all(conn).await
}

/// Marks a message delivered.
pub async fn delivered(conn: &mut Tx, id: &str, now: i64) -> Result<()> {
    db::query(
        "UPDATE webhook_outbox SET status = 'delivered', delivered_at = $1, attempts = attempts + 1, claimed_until = 0
         WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a failed attempt: retried at `next_attempt_at`, or given up on when that is `None`.
pub async fn failed(conn: &mut Tx, id: &str, error: &str, next_attempt_at: Option<i64>) -> Result<()> {
    db::query(
        "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $1, claimed_until = 0,
                status = CASE WHEN $2 IS NULL THEN 'failed' ELSE 'pending' END,
                next_attempt_at = COALESCE($2, next_attempt_at)
         WHERE id = $3",
    )
    .bind(error)
    .bind(next_attempt_at)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}
