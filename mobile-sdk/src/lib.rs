//! Assent mobile SDK: the phone side of Assent's push protocol, for apps to embed.
//!
//! An app creates one [`AssentClient`] over two interfaces it implements on its platform:
//! a [`KeyStore`] (Android Keystore / Secure Enclave: the device key never leaves it, the SDK
//! only asks for signatures) and a [`StateStore`] (where the enrolled device's id, server URL
//! and pinned server key are saved). Then:
//!
//! 1. [`AssentClient::enroll`] with the `assent://enroll?...` URI from the QR code: creates the
//!    device key, registers it, and pins the server key whose thumbprint the QR carries.
//! 2. On a push, [`AssentClient::handle_push`] gives the challenge id (push payloads carry
//!    nothing else); [`AssentClient::challenge`] fetches it and verifies the server's signature
//!    with the pinned key, the audience and the expiry; [`AssentClient::pending_challenges`]
//!    lists all of them (poll-only devices use it alone).
//! 3. [`AssentClient::approve`] (with the number the user picked, under number matching),
//!    [`AssentClient::deny`] or [`AssentClient::report_fraud`] sign the answer, bound to the
//!    exact challenge shown.
//!
//! Every message format comes from `assent-protocol`, shared with the server. Bindings for
//! Kotlin, Swift and Python are generated with UniFFI from the built library
//! (`scripts/bindings.sh`); errors reach them as the [`AssentError`] exception. See
//! `docs/sdk-guide.md`.
//!
//! [`SoftwareKeyStore`], [`FileStateStore`] and [`MemoryStateStore`] are ready-made
//! implementations for tests, desktop tools and the `assent-device` reference app.

uniffi::setup_scaffolding!();

mod client;
mod error;
mod http;
mod keystore;
mod model;
mod state;
mod verify;

pub use assent_protocol as protocol;

pub use client::{AssentClient, Clock, SystemClock};
pub use error::{AssentError, Error, KeyStoreError, Problem, StorageError};
pub use http::{Connection, validate_server_url};
pub use keystore::{
    KeyInfo, KeyStore, KeyStoreReport, SignatureFormat, SoftwareKeyStore, check_key_store, software_key_store,
};
pub use model::{
    Challenge, ChallengeContext, ChallengeDetail, ChallengeStatus, ClientConfig, DeviceRegistration, Enrollment,
    Platform, PushProvider, PushRegistration, ResponseOutcome,
};
pub use state::{
    FileStateStore, MemoryStateStore, StateStore, file_state_store, memory_state_store, write_file_atomically,
};
