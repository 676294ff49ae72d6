//! The application state every request and worker shares: configuration, database, clock,
//! signing key, wake-ups and metrics. Passed in, never global.

use std::ops::Deref;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::demo::DemoKey;
use crate::fallback::Fallback;
use crate::keys::ServerKey;
use crate::metrics::Metrics;
use crate::passkeys::Passkeys;
use crate::store::Store;
use crate::wake::Wake;

/// Everything a request handler or worker may need; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// The shared parts behind [`AppState`].
#[derive(Debug)]
pub struct Inner {
    /// The configuration the server started with.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// The key that signs challenges.
    pub server_key: ServerKey,
    /// Wakes long-polls and workers when something changed.
    pub wake: Wake,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The OpenAPI document, generated from the routes at start.
    pub openapi: serde_json::Value,
    /// A client for outgoing HTTP (webhooks, SMS providers).
    pub http: reqwest::Client,
    /// Push provider clients (APNs, FCM), those that are configured.
    pub push: crate::push::PushClients,
    /// SMS and email senders and the code pepper.
    pub fallback: Fallback,
    /// Device public keys, parsed once.
    pub device_keys: crate::devices::KeyCache,
    /// Challenges devices fetched, for checking their answers without a second read.
    pub fetched: crate::challenges::FetchedChallenges,
    /// The WebAuthn relying party.
    pub passkeys: Passkeys,
    /// The demo page's session key, when the demo is served.
    pub demo: Option<DemoKey>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Wraps the parts into a state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        store: Store,
        clock: Arc<dyn Clock>,
        server_key: ServerKey,
        push: crate::push::PushClients,
        fallback: Fallback,
        passkeys: Passkeys,
        demo: Option<DemoKey>,
    ) -> Self {
        let openapi = serde_json::to_value(crate::http::openapi()).unwrap_or_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("assent/", env!("CARGO_PKG_VERSION")))
            // A webhook endpoint answers itself; following redirects would let it point us elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        AppState(Arc::new(Inner {
            config,
            store,
            clock,
            server_key,
            wake: Wake::new(),
            metrics: Metrics::new(),
            openapi,
            http,
            push,
            fallback,
            device_keys: crate::devices::KeyCache::default(),
            fetched: crate::challenges::FetchedChallenges::default(),
            passkeys,
            demo,
        }))
    }

    /// The current time, at the millisecond precision the database keeps, so what an
    /// answer says and what a later read says agree.
    pub fn now(&self) -> time::OffsetDateTime {
        crate::clock::from_millis(crate::clock::to_millis(self.clock.now()))
    }
}
