//! Compact JWTs for the providers' credentials (APNs ES256 provider token, Google RS256
//! assertion). Not Assent's own JWS: those have `typ` rules and live in `assent-protocol`.

use assent_protocol::b64;
use serde::Serialize;

/// `BASE64URL(header) "." BASE64URL(claims) "." BASE64URL(sign(signing input))`.
pub(crate) fn compact<H: Serialize, C: Serialize>(
    header: &H,
    claims: &C,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, String>,
) -> Result<String, String> {
    let header = serde_json::to_vec(header).map_err(|e| format!("jwt header: {e}"))?;
    let claims = serde_json::to_vec(claims).map_err(|e| format!("jwt claims: {e}"))?;
    let input = format!("{}.{}", b64::encode(header), b64::encode(claims));
    let signature = sign(input.as_bytes())?;
    Ok(format!("{input}.{}", b64::encode(signature)))
}
