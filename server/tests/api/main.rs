//! In-process API tests: the real router over a fresh SQLite or PostgreSQL database per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod fallback;
mod foundation;
mod push;
