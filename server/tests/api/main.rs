//! In-process API tests: the real router over a fresh SQLite or PostgreSQL database per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod authenticator;
mod support;

mod deliveries;
mod fallback;
mod foundation;
mod okta;
mod passkeys;
mod providers;
mod push;
mod store;
