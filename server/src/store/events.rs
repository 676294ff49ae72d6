//! The audit log: append-only, ordered by an increasing sequence number.

use super::{Db, Tx, db};

use crate::error::Result;

crate::row! {
    /// An event row.
    #[derive(Debug, Clone)]
    pub struct EventRow {
        /// Position in the log.
        pub seq: i64,
        /// `evt_...`
        pub id: String,
        /// Unix ms.
        pub at: i64,
        /// e.g. `user.created`.
        pub kind: String,
        /// The user concerned, if any.
        pub user_id: Option<String>,
        /// Who did it: an API key id, a device id, `system` or `cli`.
        pub actor: String,
        /// JSON object with details.
        pub data: String,
    }
}

/// An event about to be appended.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// `evt_...`
    pub id: &'a str,
    /// Unix ms.
    pub at: i64,
    /// e.g. `challenge.approved`.
    pub kind: &'a str,
    /// The user concerned, if any.
    pub user_id: Option<&'a str>,
    /// Who did it.
    pub actor: &'a str,
    /// JSON object with details.
    pub data: &'a str,
}

/// The column list [`NewEvent::bind_to`] binds in order.
pub(super) const INSERT: &str = "INSERT INTO events (id, at, kind, user_id, actor, data)";

impl<'a> NewEvent<'a> {
    /// Binds the six values in the column order of [`INSERT`].
    pub(super) fn bind_to(&self, query: db::Query<'a>) -> db::Query<'a> {
        query.bind(self.id).bind(self.at).bind(self.kind).bind(self.user_id).bind(self.actor).bind(self.data)
    }
}

/// Appends an event.
pub async fn append(conn: &mut Tx, event: &NewEvent<'_>) -> Result<()> {
    event.bind_to(db::query(format!("{INSERT} VALUES ($1, $2, $3, $4, $5, $6)"))).execute(conn).await?;
    Ok(())
}

/// Events after the event `after` (exclusive), oldest first, optionally for one user.
/// An unknown `after` id yields nothing rather than restarting from the beginning.
pub async fn list<'e>(
    db: impl Into<Db<'e>>,
    user_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<EventRow>> {
    db::query(
        "SELECT seq, id, at, kind, user_id, actor, data FROM events
         WHERE ($1 IS NULL OR user_id = $1)
           AND seq > COALESCE((SELECT seq FROM events WHERE id = $2),
                              CASE WHEN $2 IS NULL THEN 0 ELSE 9223372036854775807 END)
         ORDER BY seq LIMIT $3",
    )
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}
