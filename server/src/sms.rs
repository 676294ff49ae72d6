//! SMS delivery: a chain of providers (Twilio, Vonage, a JSON webhook, and `log` for
//! development) tried in order until one accepts the message, and the toll-fraud guard that
//! decides which numbers may be sent to at all. [`send`] and [`admit`] are the entry points
//! for anything that sends SMS (challenges now, the Okta telephony hook later).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use phonenumber::Type;
use serde::Deserialize;

use crate::config::{Config, Mode, Secret, SmsConfig, SmsProviderConfig};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::state::AppState;

/// A boxed, sendable future (what a provider's `send` returns, so providers can be trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The provider's configured name (`twilio`, `vonage`, ... by default).
    pub provider: String,
    /// The provider's id for the message (Twilio's `SM...` sid, Vonage's `message-id`).
    pub message_id: String,
}

/// One way to send an SMS. Errors are the provider's own words, for the log; they never
/// contain the message text.
pub trait SmsProvider: Send + Sync + std::fmt::Debug {
    /// The configured name.
    fn name(&self) -> &str;
    /// Sends `text` to `to` (E.164) and returns the provider's message id.
    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        to: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<String, String>>;
}

/// The configured providers, in failover order.
#[derive(Debug)]
pub struct SmsChain {
    providers: Vec<Box<dyn SmsProvider>>,
    timeout: Duration,
}

impl SmsChain {
    /// Builds the chain from `[sms]`. With no provider configured, dev mode logs messages and
    /// production mode has no SMS. `log` is refused in production.
    pub fn from_config(config: &Config) -> Result<Self> {
        let sms = &config.sms;
        for country in &sms.allowed_countries {
            if country.to_ascii_uppercase().parse::<phonenumber::country::Id>().is_err() {
                return Err(Error::internal(format!(
                    "sms.allowed_countries: {country:?} is not an ISO 3166-1 alpha-2 region code"
                )));
            }
        }
        let mut providers: Vec<Box<dyn SmsProvider>> = Vec::new();
        for p in &sms.providers {
            providers.push(match p {
                SmsProviderConfig::Twilio(c) => Box::new(Twilio::new(c)?),
                SmsProviderConfig::Vonage(c) => Box::new(Vonage {
                    name: c.name.clone().unwrap_or_else(|| "vonage".into()),
                    url: format!("{}/sms/json", base_url(c.base_url.as_deref(), "https://rest.nexmo.com")?),
                    api_key: c.api_key.clone(),
                    api_secret: c.api_secret.clone(),
                    from: c.from.clone(),
                }),
                SmsProviderConfig::Webhook(c) => {
                    base_url(Some(&c.url), "")?;
                    if let Some(secret) = &c.secret {
                        crate::webhooks::sign(secret.expose(), "msg_check", 0, "")
                            .map_err(|_| Error::internal("sms webhook provider: secret must be whsec_<base64>"))?;
                    }
                    Box::new(Webhook {
                        name: c.name.clone().unwrap_or_else(|| "webhook".into()),
                        url: c.url.clone(),
                        authorization: c.authorization.clone(),
                        secret: c.secret.clone(),
                    })
                }
                SmsProviderConfig::Log(c) => {
                    refuse_log_in_production(config.mode, "sms")?;
                    Box::new(Log { name: c.name.clone().unwrap_or_else(|| "log".into()) })
                }
            });
        }
        if providers.is_empty() && config.mode == Mode::Dev {
            providers.push(Box::new(Log { name: "log".into() }));
        }
        Ok(SmsChain { providers, timeout: Duration::from_secs(sms.timeout_seconds.clamp(1, 60)) })
    }

    /// Whether SMS can be sent at all.
    pub fn is_available(&self) -> bool {
        !self.providers.is_empty()
    }

    /// Tries each provider in turn; an error or a timeout moves on to the next.
    pub async fn deliver(&self, http: &reqwest::Client, metrics: &Metrics, to: &str, text: &str) -> Result<Delivered> {
        if self.providers.is_empty() {
            return Err(Error::invalid("factor_not_configured", "no SMS provider is configured"));
        }
        for provider in &self.providers {
            let outcome = tokio::time::timeout(self.timeout, provider.send(http, to, text)).await;
            match outcome {
                Ok(Ok(message_id)) => {
                    metrics.message("sms", provider.name(), "accepted");
                    tracing::info!(provider = provider.name(), message_id = %message_id, "SMS accepted");
                    return Ok(Delivered { provider: provider.name().to_owned(), message_id });
                }
                Ok(Err(error)) => {
                    metrics.message("sms", provider.name(), "failed");
                    tracing::warn!(provider = provider.name(), %error, "SMS provider failed; trying the next");
                }
                Err(_) => {
                    metrics.message("sms", provider.name(), "timeout");
                    tracing::warn!(
                        provider = provider.name(),
                        timeout_secs = self.timeout.as_secs(),
                        "SMS provider timed out; trying the next"
                    );
                }
            }
        }
        Err(Error::DeliveryFailed {
            detail: "no SMS provider accepted the message; the providers' answers are in the server log".into(),
            challenge_id: None,
        })
    }
}

/// Refuses a development-only provider in production.
pub(crate) fn refuse_log_in_production(mode: Mode, what: &str) -> Result<()> {
    if mode == Mode::Production {
        return Err(Error::internal(format!(
            "the `log` {what} provider prints codes to the server log and is for development only; \
             it is refused when mode = \"production\""
        )));
    }
    Ok(())
}

/// Checks a configured base URL and drops its trailing slash.
fn base_url(configured: Option<&str>, default: &str) -> Result<String> {
    let url = configured.unwrap_or(default).trim_end_matches('/');
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(Error::internal(format!("SMS provider URL {url:?} must be http(s)")));
    }
    Ok(url.to_owned())
}

/// Sends an SMS through the provider chain. The number must be E.164 and should have passed
/// [`admit`] first.
pub async fn send(state: &AppState, number: &str, text: &str) -> Result<Delivered> {
    state.fallback.sms.deliver(&state.http, &state.metrics, number, text).await
}

/// A number that may be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedNumber {
    /// E.164.
    pub e164: String,
    /// The country calling code (`1`, `44`, ...).
    pub calling_code: u16,
    /// ISO 3166-1 alpha-2 region, when the number belongs to one.
    pub region: Option<String>,
}

/// The toll-fraud guard without counting: a valid number, in an allowed region, of a type
/// that receives SMS (premium-rate, shared-cost, toll-free, fixed-line and other numbers the
/// phone library recognises as not mobile are refused).
pub fn check_number(config: &SmsConfig, number: &str) -> Result<CheckedNumber> {
    let parsed = phonenumber::parse(None, number.trim())
        .ok()
        .filter(phonenumber::is_valid)
        .ok_or_else(|| Error::invalid("invalid_phone", "the phone number is not a valid international number"))?;
    let region = parsed.country().id().map(|id| id.as_ref().to_owned());
    if !config.allowed_countries.is_empty() {
        let allowed =
            region.as_deref().is_some_and(|r| config.allowed_countries.iter().any(|c| c.eq_ignore_ascii_case(r)));
        if !allowed {
            return Err(Error::invalid(
                "country_not_allowed",
                format!(
                    "SMS to {} numbers is not allowed by this server",
                    region.as_deref().unwrap_or("non-geographic")
                ),
            ));
        }
    }
    let kind = parsed.number_type(&phonenumber::metadata::DATABASE);
    if !matches!(kind, Type::Mobile | Type::FixedLineOrMobile | Type::Unknown) {
        let kind = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        return Err(Error::invalid(
            "number_not_allowed",
            format!("SMS is only sent to mobile numbers; this one is {}", kind.replace('_', " ")),
        ));
    }
    Ok(CheckedNumber {
        e164: parsed.format().mode(phonenumber::Mode::E164).to_string(),
        calling_code: parsed.code().value(),
        region,
    })
}

/// The whole toll-fraud guard: [`check_number`], then one send counted against the
/// per-number and per-country limits (committed on success).
pub async fn admit(state: &AppState, number: &str) -> Result<CheckedNumber> {
    let checked = check_number(&state.config.sms, number)?;
    let mut tx = state.store.begin().await?;
    crate::limits::check_and_count(
        &mut tx,
        state.now(),
        &crate::limits::sms(&state.config.sms.limits, &checked.e164, checked.calling_code),
    )
    .await?;
    tx.commit().await?;
    Ok(checked)
}

/// Reads an error answer's body for the log, shortened.
async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    format!("HTTP {status}: {body}")
}

/// Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{sid}/Messages.json`,
/// form-encoded, HTTP basic auth with the account SID and auth token (or an API key).
#[derive(Debug)]
struct Twilio {
    name: String,
    url: String,
    username: String,
    password: Secret,
    from: Option<String>,
    messaging_service_sid: Option<String>,
}

impl Twilio {
    fn new(c: &crate::config::TwilioConfig) -> Result<Self> {
        let (username, password) = match (&c.auth_token, &c.api_key_sid, &c.api_key_secret) {
            (_, Some(key), Some(secret)) => (key.clone(), secret.clone()),
            (Some(token), None, None) => (c.account_sid.clone(), token.clone()),
            _ => {
                return Err(Error::internal("twilio provider: set auth_token, or api_key_sid with api_key_secret"));
            }
        };
        if c.from.is_none() == c.messaging_service_sid.is_none() {
            return Err(Error::internal("twilio provider: set exactly one of from and messaging_service_sid"));
        }
        if c.account_sid.is_empty() || !c.account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(Error::internal("twilio provider: account_sid must be the AC... id"));
        }
        let base = base_url(c.base_url.as_deref(), "https://api.twilio.com")?;
        Ok(Twilio {
            name: c.name.clone().unwrap_or_else(|| "twilio".into()),
            url: format!("{base}/2010-04-01/Accounts/{}/Messages.json", c.account_sid),
            username,
            password,
            from: c.from.clone(),
            messaging_service_sid: c.messaging_service_sid.clone(),
        })
    }
}

/// The part of Twilio's Message resource we read.
#[derive(Debug, Deserialize)]
struct TwilioMessage {
    sid: String,
}

impl SmsProvider for Twilio {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        to: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<String, String>> {
        Box::pin(async move {
            let mut form = vec![("To", to)];
            match (&self.messaging_service_sid, &self.from) {
                (Some(service), _) => form.push(("MessagingServiceSid", service)),
                (None, Some(from)) => form.push(("From", from)),
                (None, None) => return Err("neither From nor MessagingServiceSid configured".into()),
            }
            form.push(("Body", text));
            let response = http
                .post(&self.url)
                .basic_auth(&self.username, Some(self.password.expose()))
                .form(&form)
                .send()
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(error_text(response).await);
            }
            let message: TwilioMessage = response.json().await.map_err(|e| format!("unreadable answer: {e}"))?;
            Ok(message.sid)
        })
    }
}

/// Vonage SMS API: `POST /sms/json`, form-encoded, key and secret in the form.
#[derive(Debug)]
struct Vonage {
    name: String,
    url: String,
    api_key: String,
    api_secret: Secret,
    from: String,
}

#[derive(Debug, Deserialize)]
struct VonageAnswer {
    messages: Vec<VonageMessage>,
}

#[derive(Debug, Deserialize)]
struct VonageMessage {
    status: String,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text")]
    error_text: Option<String>,
}

impl SmsProvider for Vonage {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        to: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<String, String>> {
        Box::pin(async move {
            // Vonage takes E.164 digits without the plus.
            let to = to.trim_start_matches('+');
            let mut form = vec![
                ("api_key", self.api_key.as_str()),
                ("api_secret", self.api_secret.expose()),
                ("from", self.from.as_str()),
                ("to", to),
                ("text", text),
            ];
            if !text.is_ascii() {
                form.push(("type", "unicode"));
            }
            let response = http.post(&self.url).form(&form).send().await.map_err(|e| format!("request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(error_text(response).await);
            }
            let answer: VonageAnswer = response.json().await.map_err(|e| format!("unreadable answer: {e}"))?;
            // A long text is split into several parts; every one must have been accepted.
            let mut first_id = None;
            for m in &answer.messages {
                if m.status != "0" {
                    return Err(format!("status {}: {}", m.status, m.error_text.as_deref().unwrap_or("no error text")));
                }
                first_id = first_id.or(m.message_id.clone());
            }
            first_id.ok_or_else(|| "the answer has no message-id".to_owned())
        })
    }
}

/// Your own endpoint: `POST {"to", "text"}` as JSON, optionally signed per Standard Webhooks.
#[derive(Debug)]
struct Webhook {
    name: String,
    url: String,
    authorization: Option<Secret>,
    secret: Option<Secret>,
}

impl SmsProvider for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(
        &'a self,
        http: &'a reqwest::Client,
        to: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<String, String>> {
        Box::pin(async move {
            let body = serde_json::json!({ "to": to, "text": text }).to_string();
            let id = format!("msg_{}", hex::encode(crate::ids::random_bytes::<16>()));
            let mut request = http.post(&self.url).header("content-type", "application/json").header("webhook-id", &id);
            if let Some(auth) = &self.authorization {
                request = request.header("authorization", auth.expose());
            }
            if let Some(secret) = &self.secret {
                let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
                let signature =
                    crate::webhooks::sign(secret.expose(), &id, timestamp, &body).map_err(|e| e.to_string())?;
                request = request.header("webhook-timestamp", timestamp).header("webhook-signature", signature);
            }
            let response = request.body(body).send().await.map_err(|e| format!("request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(error_text(response).await);
            }
            let answer: serde_json::Value = response.json().await.unwrap_or_default();
            let message_id = answer
                .get("message_id")
                .or_else(|| answer.get("id"))
                .and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|n| n.to_string())));
            Ok(message_id.unwrap_or(id))
        })
    }
}

/// Development only: the message, code included, goes to the server log.
#[derive(Debug)]
struct Log {
    name: String,
}

impl SmsProvider for Log {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(
        &'a self,
        _http: &'a reqwest::Client,
        to: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, std::result::Result<String, String>> {
        Box::pin(async move {
            let id = format!("log-{}", hex::encode(crate::ids::random_bytes::<8>()));
            tracing::info!(provider = %self.name, %to, message_id = %id, %text, "SMS (log provider, development only: not sent)");
            Ok(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_guarded() {
        let mut config = SmsConfig::default();
        let ok = check_number(&config, "+1 650 253 0000").unwrap();
        assert_eq!(ok.e164, "+16502530000");
        assert_eq!(ok.calling_code, 1);
        assert_eq!(ok.region.as_deref(), Some("US"));
        let uk_mobile = check_number(&config, "+44 7400 123456").unwrap();
        assert_eq!(uk_mobile.region.as_deref(), Some("GB"));

        config.allowed_countries = vec!["us".into(), "CA".into()];
        check_number(&config, "+16502530000").unwrap();
        let refused = check_number(&config, "+447400123456").unwrap_err();
        assert!(matches!(refused, Error::Invalid { code: "country_not_allowed", .. }), "{refused:?}");

        config.allowed_countries.clear();
        // UK premium rate (09), UK fixed line (020), US toll-free (800).
        for (number, kind) in
            [("+44 909 8790000", "premium rate"), ("+44 20 7946 0958", "fixed line"), ("+1 800 253 0000", "toll free")]
        {
            match check_number(&config, number) {
                Err(Error::Invalid { code: "number_not_allowed", detail }) => {
                    assert!(detail.contains(kind), "{detail}")
                }
                other => panic!("{number}: {other:?}"),
            }
        }
        assert!(matches!(check_number(&config, "+1 555"), Err(Error::Invalid { code: "invalid_phone", .. })));
    }

    #[test]
    fn log_is_dev_only_and_the_default_there() {
        let mut config = Config::default();
        let chain = SmsChain::from_config(&config).unwrap();
        assert!(chain.is_available());
        assert_eq!(chain.providers[0].name(), "log");

        config.mode = Mode::Production;
        assert!(!SmsChain::from_config(&config).unwrap().is_available());
        config.sms.providers = vec![SmsProviderConfig::Log(Default::default())];
        let err = SmsChain::from_config(&config).unwrap_err();
        assert!(err.to_string().contains("development only"), "{err}");
    }

    #[test]
    fn bad_provider_settings_fail_at_start() {
        let mut config = Config::default();
        config.sms.allowed_countries = vec!["XX".into()];
        assert!(SmsChain::from_config(&config).is_err());
        config.sms.allowed_countries.clear();
        config.sms.providers = vec![SmsProviderConfig::Twilio(crate::config::TwilioConfig {
            name: None,
            account_sid: "AC123".into(),
            auth_token: None,
            api_key_sid: None,
            api_key_secret: None,
            from: Some("+15005550006".into()),
            messaging_service_sid: None,
            base_url: None,
        })];
        assert!(SmsChain::from_config(&config).unwrap_err().to_string().contains("auth_token"));
    }
}
