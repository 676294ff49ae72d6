//! Prometheus metrics, held in the application state (no global registry).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of an HTTP request metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// The route template (`/v1/users/{user_id}`), never the raw path.
    pub route: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of a push delivery metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `apns` or `fcm`.
    pub provider: String,
    /// `delivered`, `retry`, `failed` or `token_gone`.
    pub outcome: String,
}

/// Labels of a code message (SMS or email) handed to a provider.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// `sms` or `email`.
    pub channel: String,
    /// The provider's configured name.
    pub provider: String,
    /// `accepted`, `failed` or `timeout`.
    pub outcome: String,
}

/// Labels of an Okta telephony hook call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OktaLabels {
    /// The provider that delivered, or `none`.
    pub provider: String,
    /// `SUCCESSFUL`, `FAILED` or `malformed`.
    pub outcome: String,
}

/// Every metric the server exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Requests served.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to answer a request, in seconds.
    pub request_duration: Family<RequestLabels, Histogram>,
    /// Push sends by provider and outcome.
    pub push_deliveries: Family<DeliveryLabels, Counter>,
    /// Time a push provider took to answer, in seconds.
    pub push_send_duration: Family<DeliveryLabels, Histogram>,
    /// Long-polls (`GET /v1/challenges/{id}?wait=`) waiting right now.
    pub long_polls: Gauge,
    /// SMS and email messages handed to providers, by outcome.
    pub messages: Family<MessageLabels, Counter>,
    /// Okta telephony hook calls by provider and outcome.
    pub okta_hook: Family<OktaLabels, Counter>,
}

impl Metrics {
    /// Counts an Okta telephony hook call.
    pub fn okta(&self, provider: &str, outcome: &str) {
        let labels = OktaLabels { provider: provider.to_owned(), outcome: outcome.to_owned() };
        self.okta_hook.get_or_create(&labels).inc();
    }

    /// Counts one attempt to hand a message to a provider.
    pub fn message(&self, channel: &str, provider: &str, outcome: &str) {
        let labels =
            MessageLabels { channel: channel.to_owned(), provider: provider.to_owned(), outcome: outcome.to_owned() };
        self.messages.get_or_create(&labels).inc();
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("assent");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests served", requests.clone());
        let request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(latency_histogram);
        registry.register("http_request_duration_seconds", "Time to answer HTTP requests", request_duration.clone());
        let push_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register("push_deliveries", "Push sends by provider and outcome", push_deliveries.clone());
        let push_send_duration = Family::<DeliveryLabels, Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "push_send_duration_seconds",
            "Time push providers took to answer",
            push_send_duration.clone(),
        );
        let long_polls = Gauge::default();
        registry.register("challenge_long_polls", "Long-polls waiting for a challenge decision", long_polls.clone());
        let okta_hook = Family::<OktaLabels, Counter>::default();
        registry.register(
            "okta_telephony_hook",
            "Okta telephony hook calls by provider and outcome",
            okta_hook.clone(),
        );
        let messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "messages",
            "SMS and email messages handed to providers, by channel, provider and outcome",
            messages.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            requests,
            request_duration,
            push_deliveries,
            push_send_duration,
            long_polls,
            messages,
            okta_hook,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
