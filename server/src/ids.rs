//! Opaque identifiers with a kind prefix (`dev_`, `chl_`, `key_`, ...) and random secrets.

use std::time::{SystemTime, UNIX_EPOCH};

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
    /// `msg_`: a webhook message (its `webhook-id`).
    WebhookMessage,
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
            IdKind::WebhookMessage => "msg_",
        }
    }
}

/// A new id: the kind's prefix and 32 lowercase hex digits, the Unix time in milliseconds
/// (48 bits) followed by 80 random bits.
///
/// The time comes first so that ids made one after another sort together, as UUIDv7's do: a
/// new row's entry in an index on its id lands beside the previous one's, in a page the
/// database holds in memory, rather than in a random page of an index that has outgrown its
/// cache. Ids stay opaque to clients; 80 random bits keep them unguessable and unique.
pub fn new_id(kind: IdKind) -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut bytes = [0u8; 16];
    // 48 bits of milliseconds last until the year 10889.
    bytes[..6].copy_from_slice(&(millis as u64).to_be_bytes()[2..]);
    bytes[6..].copy_from_slice(&random_bytes::<10>());
    format!("{}{}", kind.prefix(), hex::encode(bytes))
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_prefix_and_32_hex_digits() {
        let id = new_id(IdKind::Challenge);
        let hex = id.strip_prefix("chl_").expect("prefix");
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
    }

    #[test]
    fn ids_begin_with_the_time_they_were_made() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        let id = new_id(IdKind::Event);
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
        let millis = u128::from_str_radix(&id["evt_".len().."evt_".len() + 12], 16).unwrap();
        assert!((before..=after).contains(&millis), "{millis} not in {before}..={after}");
    }

    #[test]
    fn ids_made_in_different_milliseconds_sort_in_the_order_made() {
        let first = new_id(IdKind::Event);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_id(IdKind::Event);
        assert!(first < second, "{first} >= {second}");
    }

    #[test]
    fn ids_made_in_the_same_millisecond_differ() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_id(IdKind::Device)).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
