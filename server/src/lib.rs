//! Assent server: a push-first authentication backend.
//!
//! The binary `assent` wraps this library; tests build the same router in-process.
//! See `docs/architecture.md` for how the parts fit together.

#![forbid(unsafe_code)]

pub mod api_keys;
pub mod app;
pub mod audit;
pub mod challenges;
pub mod clock;
pub mod config;
pub mod deliveries;
pub mod demo;
pub mod devices;
pub mod email;
pub mod error;
pub mod fallback;
pub mod http;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod okta;
pub mod otp;
pub mod passkeys;
pub mod push;
pub mod sms;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod users;
pub mod wake;
pub mod webhooks;
pub mod workers;

pub use error::{Error, Result};
