//! Background work every replica runs: expiring challenges, sending webhooks, forgetting
//! old proof ids, enrollment tokens, passkey ceremonies and rate-limit windows, and (on PostgreSQL) listening for other replicas.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::to_millis;
use crate::error::Result;
use crate::state::AppState;
use crate::store;

/// The running workers; stop them with [`Workers::shutdown`].
#[derive(Debug)]
pub struct Workers {
    token: CancellationToken,
    tasks: JoinSet<()>,
}

impl Workers {
    /// Starts every worker for `state`.
    pub fn spawn(state: &AppState) -> Self {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::webhooks::run_worker(state.clone(), token.clone()));
        tasks.spawn(crate::deliveries::run_worker(state.clone(), token.clone()));
        tasks.spawn(every(Duration::from_secs(1), token.clone(), state.clone(), |s| async move {
            crate::challenges::expire_due(&s, None).await.map(drop)
        }));
        tasks.spawn(every(
            Duration::from_secs(60),
            token.clone(),
            state.clone(),
            |s| async move { clean_up(&s).await },
        ));
        let listener_state = state.clone();
        let listener_token = token.clone();
        tasks.spawn(async move {
            let wake_state = listener_state.clone();
            listener_state
                .store
                .forward_notifications(move |id| wake_state.wake.challenge_changed(id), listener_token)
                .await;
        });
        Workers { token, tasks }
    }

    /// Stops the workers and waits for them (each finishes the item it is on).
    pub async fn shutdown(mut self) {
        self.token.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn every<F, Fut>(period: Duration, token: CancellationToken, state: AppState, job: F)
where
    F: Fn(AppState) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(e) = job(state.clone()).await {
                    tracing::error!(error = %e, "background job failed");
                }
            }
        }
    }
}

/// Deletes proof ids and enrollment tokens nobody can use any more.
pub async fn clean_up(state: &AppState) -> Result<()> {
    let now = to_millis(state.now());
    let mut tx = state.store.begin().await?;
    let proofs = store::proofs::delete_expired(&mut tx, now).await?;
    // Keep used and expired enrollments a day for support questions, then forget them.
    let enrollments = store::enrollments::delete_expired(&mut tx, now - 24 * 3600 * 1000).await?;
    let counters = store::limits::delete_expired(&mut tx, now).await?;
    // An hour after expiry, a ceremony is no longer worth a clear "expired" answer.
    let ceremonies =
        store::passkeys::delete_expired_ceremonies(&mut tx, now - crate::passkeys::CEREMONY_FORGET_SECS * 1000).await?;
    tx.commit().await?;
    if proofs + enrollments + counters + ceremonies > 0 {
        tracing::debug!(proofs, enrollments, counters, ceremonies, "cleaned up");
    }
    Ok(())
}
