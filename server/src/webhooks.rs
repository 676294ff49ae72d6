//! Webhook delivery per the Standard Webhooks scheme: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>`, from a durable
//! outbox, retried with exponential backoff.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::clock::to_millis;
use crate::config::WebhookEndpoint;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::webhooks::{self as outbox, OutboxRow};

/// Attempts before a message is given up on (about 14 hours of backoff in all).
pub const MAX_ATTEMPTS: i64 = 15;
/// How long a claimed message is reserved for the worker that claimed it.
const LEASE: Duration = Duration::from_secs(60);

/// The delay before retry number `attempt` (1-based): 5 s doubling, at most 4 hours.
pub fn backoff(attempt: i64) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    Duration::from_secs(5u64.saturating_mul(2u64.saturating_pow(exp)).min(4 * 3600))
}

/// The signature header value for a message.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &str) -> Result<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .map_err(|_| Error::internal("webhook secret is not whsec_<base64>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(Error::internal)?;
    mac.update(format!("{msg_id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

/// Checks every configured secret decodes, so a typo fails at start, not at first event.
pub fn validate_endpoints(endpoints: &[WebhookEndpoint], mode: crate::config::Mode) -> Result<()> {
    for e in endpoints {
        if mode == crate::config::Mode::Production && !e.url.starts_with("https://") {
            return Err(Error::internal(format!("webhook url {} must be https in production mode", e.url)));
        }
        sign(e.secret.expose(), "msg_check", 0, "")
            .map_err(|_| Error::internal(format!("webhook {}: secret must be whsec_<base64>", e.url)))?;
        if !(e.url.starts_with("https://") || e.url.starts_with("http://")) {
            return Err(Error::internal(format!("webhook url {} must be http(s)", e.url)));
        }
    }
    Ok(())
}

/// Sends every due message once; returns how many were tried.
pub async fn deliver_due(state: &AppState) -> Result<usize> {
    let now = state.now();
    let lease_until = to_millis(now) + i64::try_from(LEASE.as_millis()).unwrap_or(60_000);
    let mut conn = state.store.begin().await?;
    let batch = outbox::claim_due(&mut conn, state.store.backend(), to_millis(now), lease_until, 16).await?;
    conn.commit().await?;
    let count = batch.len();
    for row in batch {
        deliver_one(state, row).await?;
    }
    Ok(count)
}

async fn deliver_one(state: &AppState, row: OutboxRow) -> Result<()> {
    let outcome = match state.config.webhooks.iter().find(|e| e.url == row.endpoint) {
        None => Err("endpoint no longer configured".to_owned()),
        Some(endpoint) => post(state, endpoint, &row).await,
    };
    let now = state.now();
    let mut tx = state.store.begin().await?;
    match outcome {
        Ok(()) => outbox::delivered(&mut tx, &row.id, to_millis(now)).await?,
        Err(error) => {
            let attempt = row.attempts + 1;
            let next = (attempt < MAX_ATTEMPTS)
                .then(|| to_millis(now) + i64::try_from(backoff(attempt).as_millis()).unwrap_or(i64::MAX / 2));
            tracing::warn!(webhook = %row.id, endpoint = %row.endpoint, attempt, %error, "webhook delivery failed");
            outbox::failed(&mut tx, &row.id, &error, next).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn post(state: &AppState, endpoint: &WebhookEndpoint, row: &OutboxRow) -> std::result::Result<(), String> {
    let timestamp = state.now().unix_timestamp();
    let signature = sign(endpoint.secret.expose(), &row.id, timestamp, &row.payload).map_err(|e| e.to_string())?;
    let response = state
        .http
        .post(&endpoint.url)
        .header("content-type", "application/json")
        .header("webhook-id", &row.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(row.payload.clone())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status().is_success() { Ok(()) } else { Err(format!("endpoint answered {}", response.status())) }
}

/// Runs the webhook worker until `shutdown`.
pub async fn run_worker(state: AppState, shutdown: CancellationToken) {
    loop {
        let tried = match deliver_due(&state).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "webhook worker");
                0
            }
        };
        if tried > 0 {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = state.wake.outbox.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signature_matches_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(5), Duration::from_secs(80));
        assert_eq!(backoff(40), Duration::from_secs(4 * 3600));
    }
}
