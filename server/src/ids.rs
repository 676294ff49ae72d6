//! Opaque identifiers with a kind prefix (`dev_`, `chl_`, `key_`, ...) and random secrets.

use rand_core::{OsRng, RngCore};

/// The prefixes of every kind of id the server mints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `key_`: an API key.
    ApiKey,
    /// `evt_`: an audit event.
    Event,
    /// `dev_`: a device.
    Device,
    /// `chl_`: a challenge.
    Challenge,
    /// `enr_`: an enrollment.
    Enrollment,
    /// `pk_`: a passkey.
    Passkey,
    /// `cer_`: a passkey ceremony.
    Ceremony,
}

impl IdKind {
    /// The prefix, underscore included.
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::ApiKey => "key_",
            IdKind::Event => "evt_",
            IdKind::Device => "dev_",
            IdKind::Challenge => "chl_",
            IdKind::Enrollment => "enr_",
            IdKind::Passkey => "pk_",
            IdKind::Ceremony => "cer_",
        }
    }
}

/// A new id: the kind's prefix and 128 random bits in lowercase hex.
pub fn new_id(kind: IdKind) -> String {
    format!("{}{}", kind.prefix(), hex::encode(random_bytes::<16>()))
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}
