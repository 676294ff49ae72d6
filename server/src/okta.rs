//! Okta's telephony inline hook: Assent as an Okta org's bring-your-own SMS provider.
//! Okta sends the code it generated; Assent reads the number, applies the same toll-fraud
//! guard as its own fallback codes, sends through the SMS provider chain, and answers in
//! Okta's format well inside Okta's 3-second limit.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::audit::{self, Actor};
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::state::AppState;

/// `[okta]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OktaConfig {
    /// The header Okta sends the secret in (the hook's "Authentication field").
    pub auth_header: String,
    /// The secret Okta sends (the hook's "Authentication secret"). Without it the hook is off.
    pub auth_secret: Option<Secret>,
    /// ISO 3166-1 region used to read numbers Okta sends without a country code (its sample
    /// sends `9876543210`). Without it such numbers are refused, never guessed.
    pub default_region: Option<String>,
    /// How long a send may take before the hook answers `FAILED` (Okta gives up at 3 s).
    pub deadline_ms: u64,
}

impl Default for OktaConfig {
    fn default() -> Self {
        OktaConfig {
            auth_header: "Authorization".to_owned(),
            auth_secret: None,
            default_region: None,
            deadline_ms: 2500,
        }
    }
}

/// The parts of Okta's request Assent uses (unknown members are ignored: Okta adds fields).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookRequest {
    #[serde(default)]
    request_type: Option<String>,
    data: HookData,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookData {
    message_profile: MessageProfile,
    #[serde(default)]
    user_profile: Option<UserProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageProfile {
    #[serde(default)]
    msg_template: Option<String>,
    phone_number: String,
    delivery_channel: String,
    otp_code: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserProfile {
    #[serde(default)]
    user_id: Option<String>,
}

/// Whether the hook's secret header matches (constant time). `Ok(false)` when the hook is off.
pub fn authorized(config: &OktaConfig, presented: Option<&[u8]>) -> Result<bool> {
    let Some(secret) = &config.auth_secret else {
        return Err(Error::NotFound("Okta telephony hook (not configured)"));
    };
    Ok(presented.is_some_and(|p| bool::from(p.ct_eq(secret.expose().as_bytes()))))
}

/// Okta's success/failure command.
fn command(status: &str, provider: &str, transaction_id: &str, metadata: String) -> Value {
    json!({"commands": [{"type": "com.okta.telephony.action", "value": [{
        "status": status, "provider": provider, "transactionId": transaction_id, "transactionMetadata": metadata,
    }]}]})
}

/// Okta's error object.
fn okta_error(summary: &str, reason: &str, location: &str) -> Value {
    json!({"error": {"errorSummary": summary, "errorCauses": [{"errorSummary": summary, "reason": reason, "location": location}]}})
}

/// Reads a number as Okta sends it: E.164, or national digits in the configured region.
fn read_number(config: &OktaConfig, raw: &str) -> std::result::Result<String, String> {
    let raw = raw.trim();
    let parsed = if raw.starts_with('+') {
        phonenumber::parse(None, raw).map_err(|_| "the phone number cannot be read".to_owned())?
    } else {
        let Some(region) = &config.default_region else {
            return Err("the phone number has no country code and no okta.default_region is configured".to_owned());
        };
        let id: phonenumber::country::Id = region
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| format!("okta.default_region {region:?} is not a region"))?;
        phonenumber::parse(Some(id), raw).map_err(|_| "the phone number cannot be read".to_owned())?
    };
    if !phonenumber::is_valid(&parsed) {
        return Err("the phone number is not valid".to_owned());
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// The text to send: Okta's template with its code (Okta usually fills the code in itself).
fn message_text(template: Option<&str>, code: &str) -> String {
    match template.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if t.contains("${code}") => t.replace("${code}", code),
        Some(t) if t.contains(code) => t.to_owned(),
        Some(t) => format!("{t} {code}"),
        None => format!("Your verification code is {code}"),
    }
}

/// Handles one hook call; always an answer Okta understands.
pub async fn handle(state: &AppState, body: &[u8]) -> Value {
    let started = Instant::now();
    let request: HookRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            state.metrics.okta("none", "malformed");
            return okta_error("Malformed telephony hook request", &e.to_string(), "data.messageProfile");
        }
    };
    let profile = &request.data.message_profile;
    let okta_user = request.data.user_profile.as_ref().and_then(|u| u.user_id.clone());
    let channel = profile.delivery_channel.trim().to_ascii_lowercase();
    let config = &state.config.okta;
    let (status, provider, transaction, reason, masked) = 'outcome: {
        if !profile.otp_code.chars().all(|c| c.is_ascii_alphanumeric()) || profile.otp_code.is_empty() {
            break 'outcome (
                "FAILED",
                "none".to_owned(),
                String::new(),
                "the OTP code is not plain digits".to_owned(),
                None,
            );
        }
        let e164 = match read_number(config, &profile.phone_number) {
            Ok(n) => n,
            Err(reason) => break 'outcome ("FAILED", "none".to_owned(), String::new(), reason, None),
        };
        let masked = Some(crate::otp::mask_phone(&e164));
        if channel != "sms" {
            let reason = format!("no voice provider is configured for delivery channel {:?}", profile.delivery_channel);
            break 'outcome ("FAILED", "none".to_owned(), String::new(), reason, masked);
        }
        if let Err(e) = crate::sms::admit(state, &e164).await {
            break 'outcome ("FAILED", "none".to_owned(), String::new(), refusal(&e), masked);
        }
        let text = message_text(profile.msg_template.as_deref(), &profile.otp_code);
        let deadline = Duration::from_millis(config.deadline_ms).saturating_sub(started.elapsed());
        match tokio::time::timeout(deadline, crate::sms::send(state, &e164, &text)).await {
            Ok(Ok(sent)) => ("SUCCESSFUL", sent.provider, sent.message_id, String::new(), masked),
            Ok(Err(e)) => ("FAILED", "none".to_owned(), String::new(), refusal(&e), masked),
            Err(_) => {
                let reason = format!("no provider accepted the message within {} ms", config.deadline_ms);
                ("FAILED", "none".to_owned(), String::new(), reason, masked)
            }
        }
    };
    let elapsed_ms = started.elapsed().as_millis();
    state.metrics.okta(&provider, status);
    let data = json!({
        "request_type": request.request_type, "okta_user_id": okta_user, "channel": channel,
        "phone": masked, "status": status, "provider": provider, "transaction_id": transaction,
        "reason": if reason.is_empty() { Value::Null } else { Value::String(reason.clone()) },
        "duration_ms": elapsed_ms,
    });
    if let Err(e) = record(state, data).await {
        tracing::error!(error = %e, "recording the Okta hook call");
    }
    let metadata = if reason.is_empty() { format!("Duration={elapsed_ms}ms") } else { reason };
    command(status, &provider, &transaction, metadata)
}

fn refusal(e: &Error) -> String {
    match e {
        Error::Invalid { code, detail } | Error::Conflict { code, detail } => format!("{code}: {detail}"),
        Error::RateLimited { retry_after, .. } => format!("rate_limited: retry after {retry_after} s"),
        other => {
            tracing::warn!(error = %other, "Okta hook send failed");
            "delivery_failed: no SMS provider accepted the message".to_owned()
        }
    }
}

async fn record(state: &AppState, data: Value) -> Result<()> {
    let mut tx = state.store.begin().await?;
    audit::record(&mut tx, state.now(), "okta.telephony", None, &Actor::System, data).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_without_country_code_need_a_region() {
        let mut config = OktaConfig::default();
        assert!(read_number(&config, "9876543210").is_err());
        config.default_region = Some("in".into());
        assert_eq!(read_number(&config, "9876543210").as_deref(), Ok("+919876543210"));
        assert_eq!(read_number(&config, "+1 650 253 0000").as_deref(), Ok("+16502530000"));
    }

    #[test]
    fn templates_carry_the_code_once() {
        assert_eq!(message_text(Some("Your code is 38829"), "38829"), "Your code is 38829");
        assert_eq!(message_text(Some("Code: ${code}"), "38829"), "Code: 38829");
        assert_eq!(message_text(None, "38829"), "Your verification code is 38829");
    }
}
