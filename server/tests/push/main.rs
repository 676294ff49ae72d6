//! Push provider clients against local fakes of APNs (HTTP/2 without TLS) and FCM (HTTP v1 and
//! its OAuth token endpoint). The fakes speak the providers' documented wire formats and check
//! what they receive; time moves only through a `ManualClock`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod apns;
mod config;
mod fcm;
