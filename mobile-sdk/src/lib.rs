//! Assent mobile SDK: the phone side of the push protocol.
//!
//! This crate will hold the client an app embeds (enrollment, fetching and verifying
//! server-signed challenges, signing responses with a platform key store) and its UniFFI
//! bindings. It currently exposes only the shared wire formats of `assent-protocol`.

#![forbid(unsafe_code)]

pub use assent_protocol as protocol;
