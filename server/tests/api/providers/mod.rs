//! Push provider clients against local fakes of APNs (HTTP/2 without TLS) and FCM (HTTP v1 and
//! its OAuth token endpoint); time moves only through a `ManualClock`.

mod apns;
mod config;
mod fcm;
