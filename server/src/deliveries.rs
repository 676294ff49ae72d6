//! The push delivery worker: sends the deliveries recorded with each challenge (the outbox),
//! so a crash between the challenge's commit and the send loses nothing. Retries transient
//! failures until the challenge expires; clears tokens Apple or Google report gone.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::audit::{self, Actor};
use crate::clock::{from_millis, to_millis};
use crate::error::Result;
use crate::metrics::DeliveryLabels;
use crate::push::{PushMessage, PushOutcome, PushSender};
use crate::state::AppState;
use crate::store::challenges::{self as store, DueDelivery};

/// How long a claimed delivery is reserved for its worker; longer than a send can take.
const LEASE: Duration = Duration::from_secs(30);

/// Delay before retry `attempt` (1-based) when the provider gave none: 1 s doubling, at most 60 s.
fn backoff(attempt: i64) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 6)).unwrap_or(6);
    Duration::from_secs(2u64.pow(exp)).min(Duration::from_secs(60))
}

/// Sends every due delivery once; returns how many were tried.
pub async fn deliver_due(state: &AppState) -> Result<usize> {
    let now = to_millis(state.now());
    let lease = now + i64::try_from(LEASE.as_millis()).unwrap_or(30_000);
    let mut tx = state.store.begin().await?;
    let batch = store::claim_due_deliveries(&mut tx, state.store.backend(), now, lease, 32).await?;
    tx.commit().await?;
    let count = batch.len();
    let sends = batch.into_iter().map(|due| deliver_one(state, due));
    for result in futures_util::future::join_all(sends).await {
        result?;
    }
    Ok(count)
}

async fn deliver_one(state: &AppState, due: DueDelivery) -> Result<()> {
    let now = state.now();
    let target = store::delivery_target(state.store.reader(), &due.challenge_id, &due.device_id).await?;
    let Some(target) = target else {
        return finish(state, &due, "cancelled", Some("device or challenge deleted")).await;
    };
    if target.status != "pending" || target.expires_at <= to_millis(now) || target.revoked_at.is_some() {
        return finish(state, &due, "cancelled", None).await;
    }
    let Some(token) = target.push_token.clone() else {
        return finish(state, &due, "not_sent", Some("the device has no push token")).await;
    };
    let message = PushMessage {
        device_token: token.clone(),
        challenge_id: due.challenge_id.clone(),
        expires_at: from_millis(target.expires_at),
    };
    let started = Instant::now();
    let outcome = match target.push_provider.as_str() {
        "apns" => match &state.push.apns {
            Some(client) => client.send(&message).await,
            None => PushOutcome::Failed { reason: "APNs is not configured on this server".into() },
        },
        "fcm" => match &state.push.fcm {
            Some(client) => client.send(&message).await,
            None => PushOutcome::Failed { reason: "FCM is not configured on this server".into() },
        },
        other => PushOutcome::Failed { reason: format!("unknown provider {other}") },
    };
    let labels = DeliveryLabels { provider: target.push_provider.clone(), outcome: outcome_label(&outcome).to_owned() };
    state.metrics.push_deliveries.get_or_create(&labels).inc();
    state.metrics.push_send_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());

    let now = state.now();
    let now_ms = to_millis(now);
    let attempt = due.attempts + 1;
    // What the delivery row becomes, and for a token the provider says is gone, the token to clear.
    let (status, error, next_attempt_at, gone) = match outcome {
        PushOutcome::Delivered { .. } => ("sent", None, None, None),
        PushOutcome::Retry { after, reason } => {
            let wait = after.unwrap_or_default().max(backoff(attempt));
            let next = now_ms + i64::try_from(wait.as_millis()).unwrap_or(60_000);
            if next < target.expires_at {
                tracing::info!(challenge = %due.challenge_id, device = %due.device_id, %reason, attempt, "push delivery will be retried");
                ("pending", Some(reason), Some(next), None)
            } else {
                ("failed", Some(format!("gave up before expiry: {reason}")), None, None)
            }
        }
        PushOutcome::Failed { reason } => {
            tracing::warn!(challenge = %due.challenge_id, device = %due.device_id, %reason, "push delivery failed");
            ("failed", Some(reason), None, None)
        }
        PushOutcome::TokenGone { reason } => ("failed", Some(reason.clone()), None, Some(reason)),
    };
    let mut tx = state.store.begin().await?;
    store::record_delivery(
        &mut tx,
        &due.challenge_id,
        &due.device_id,
        status,
        error.as_deref(),
        next_attempt_at,
        true,
        now_ms,
    )
    .await?;
    if let Some(reason) = gone
        && store::clear_push_token(&mut tx, &due.device_id, &token).await?
    {
        let user_id = crate::store::devices::get(&mut tx, &due.device_id).await?.map(|d| d.user_id);
        audit::record(
            &mut tx,
            now,
            "device.push_token_cleared",
            user_id.as_deref(),
            &Actor::System,
            serde_json::json!({ "device_id": due.device_id, "provider": target.push_provider, "reason": reason }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Ends a delivery without sending it.
async fn finish(state: &AppState, due: &DueDelivery, status: &str, error: Option<&str>) -> Result<()> {
    let now = to_millis(state.now());
    let mut tx = state.store.begin().await?;
    store::record_delivery(&mut tx, &due.challenge_id, &due.device_id, status, error, None, false, now).await?;
    tx.commit().await?;
    Ok(())
}

fn outcome_label(outcome: &PushOutcome) -> &'static str {
    match outcome {
        PushOutcome::Delivered { .. } => "delivered",
        PushOutcome::Retry { .. } => "retry",
        PushOutcome::Failed { .. } => "failed",
        PushOutcome::TokenGone { .. } => "token_gone",
    }
}

/// Runs the delivery worker until `shutdown`.
pub async fn run_worker(state: AppState, shutdown: CancellationToken) {
    loop {
        let tried = match deliver_due(&state).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "push delivery worker");
                0
            }
        };
        if tried > 0 {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = state.wake.push.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}
