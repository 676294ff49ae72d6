//! Unpadded base64url (RFC 4648 §5), the only binary-to-text encoding on Assent's wire.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Encodes bytes as base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url.
///
/// Strict: `=` padding, the standard alphabet's `+` and `/`, whitespace, impossible lengths and
/// non-zero trailing bits are all refused with [`Error::BadEncoding`], so every byte string has
/// exactly one accepted encoding.
pub fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| Error::BadEncoding)
}

/// Base64url (unpadded) SHA-256 of `bytes`.
///
/// Used for a response's `chash` (over the exact challenge JWS string), a proof's `bh` (over the
/// request body) and JWK thumbprints.
pub fn sha256_b64(bytes: impl AsRef<[u8]>) -> String {
    encode(Sha256::digest(bytes.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_all_lengths() {
        for len in 0..70u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37).wrapping_add(250)).collect();
            let text = encode(&data);
            assert!(!text.contains('='));
            assert_eq!(decode(&text).unwrap(), data);
        }
    }

    #[test]
    fn uses_url_alphabet() {
        assert_eq!(encode([0xfb, 0xff]), "-_8");
        assert_eq!(decode("-_8").unwrap(), vec![0xfb, 0xff]);
    }

    #[test]
    fn rejects_padding_std_alphabet_and_junk() {
        for bad in ["-_8=", "QQ==", "QQ=", "+/8", "ab/c", "QQ Q", "Q", "QR", "ab\ncd", "é"] {
            assert_eq!(decode(bad), Err(Error::BadEncoding), "{bad:?}");
        }
    }

    #[test]
    fn sha256_of_known_input() {
        // SHA-256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(sha256_b64("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }
}
