//! Cross-replica wake-ups. On PostgreSQL a decided challenge is announced with `NOTIFY`
//! (delivered when the deciding transaction commits) and every replica listens; on SQLite
//! there is one process, and the in-process broadcast is all there is.

use std::time::Duration;

use sqlx::postgres::PgListener;

use super::{Backend, Store, Tx, db};
use crate::error::Result;

pub(super) const CHANNEL: &str = "assent_challenges";

impl Store {
    /// Announces to other replicas, at commit, that a challenge changed.
    pub async fn notify_challenge(&self, conn: &mut Tx, id: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            db::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(id).execute(conn).await?;
        }
        Ok(())
    }

    /// On PostgreSQL, listens for other replicas' announcements and hands each changed
    /// challenge id to `on_change` until `shutdown` fires; reconnects after errors. Returns at
    /// once on SQLite.
    pub async fn forward_notifications(
        &self,
        on_change: impl Fn(&str) + Send,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        if self.backend != Backend::Postgres {
            return;
        }
        let url = self.url.expose().to_owned();
        loop {
            let listener = async {
                let mut listener = PgListener::connect(&url).await?;
                listener.listen(CHANNEL).await?;
                loop {
                    let note = listener.recv().await?;
                    on_change(note.payload());
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                result = listener => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
