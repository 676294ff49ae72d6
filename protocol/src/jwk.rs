//! P-256 public keys as JWK (RFC 7517/7518 §6.2), their RFC 7638 thumbprints, and the JWKS the
//! server publishes at `GET /v1/server-keys`.

use p256::ecdsa::VerifyingKey;
use p256::elliptic_curve::sec1::FromEncodedPoint as _;
use p256::{EncodedPoint, PublicKey};
use serde::{Deserialize, Serialize};

use crate::b64;
use crate::error::{Error, Result};
use crate::jws::ALG_ES256;

/// `kty` of every Assent key.
pub const KTY_EC: &str = "EC";
/// `crv` of every Assent key.
pub const CRV_P256: &str = "P-256";
/// `use` of the keys in the server's JWKS.
pub const USE_SIG: &str = "sig";

/// A validated P-256 public key in JWK form: `{"kty":"EC","crv":"P-256","x":..,"y":..}`.
///
/// A value of this type always holds a point on the curve: deserialising checks `kty`, `crv`,
/// the coordinate encodings (exactly 32 bytes each) and curve membership, and refuses a JWK that
/// carries the private member `d`. The optional `kid`, `use` and `alg` members are kept when
/// present (an `alg` other than `ES256` is refused) and only serialised when set; any other
/// member is ignored.
///
/// Deserialising through serde reports failures as [`Error::Json`] text; use
/// [`EcPublicJwk::from_json`] to get the typed error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "JwkFields", into = "JwkFields")]
pub struct EcPublicJwk {
    key: VerifyingKey,
    x: String,
    y: String,
    kid: Option<String>,
    key_use: Option<String>,
    alg: Option<String>,
}

/// The JWK members as they appear on the wire, before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct JwkFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kty: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alg: Option<String>,
    /// Only read so that a private key sent by mistake is refused rather than silently accepted.
    #[serde(default, skip_serializing)]
    d: Option<serde_json::Value>,
}

impl TryFrom<JwkFields> for EcPublicJwk {
    type Error = Error;

    fn try_from(f: JwkFields) -> Result<Self> {
        if f.d.is_some() {
            return Err(Error::InvalidKey("JWK carries the private member `d`".into()));
        }
        match f.kty.as_deref() {
            Some(KTY_EC) => {}
            Some(other) => return Err(Error::UnsupportedKeyType(other.to_owned())),
            None => return Err(Error::InvalidKey("missing `kty`".into())),
        }
        match f.crv.as_deref() {
            Some(CRV_P256) => {}
            Some(other) => return Err(Error::UnsupportedCurve(other.to_owned())),
            None => return Err(Error::InvalidKey("missing `crv`".into())),
        }
        if let Some(alg) = f.alg.as_deref()
            && alg != ALG_ES256
        {
            return Err(Error::UnsupportedAlg(alg.to_owned()));
        }
        let x = coordinate(f.x.as_deref(), "x")?;
        let y = coordinate(f.y.as_deref(), "y")?;
        let point = EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
        let public: Option<PublicKey> = PublicKey::from_encoded_point(&point).into();
        let public = public.ok_or(Error::OffCurve)?;
        let mut jwk = EcPublicJwk::from_verifying_key(&VerifyingKey::from(public));
        jwk.kid = f.kid;
        jwk.key_use = f.key_use;
        jwk.alg = f.alg;
        Ok(jwk)
    }
}

/// Decodes one affine coordinate, which must be exactly 32 bytes (leading zeros kept, RFC 7518
/// §6.2.1.2).
fn coordinate(value: Option<&str>, name: &str) -> Result<[u8; 32]> {
    let value = value.ok_or_else(|| Error::InvalidKey(format!("missing `{name}`")))?;
    let bytes = b64::decode(value)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| Error::InvalidKey(format!("`{name}` is {} bytes, expected 32", bytes.len())))
}

impl From<EcPublicJwk> for JwkFields {
    fn from(jwk: EcPublicJwk) -> Self {
        JwkFields {
            kty: Some(KTY_EC.to_owned()),
            crv: Some(CRV_P256.to_owned()),
            x: Some(jwk.x),
            y: Some(jwk.y),
            kid: jwk.kid,
            key_use: jwk.key_use,
            alg: jwk.alg,
            d: None,
        }
    }
}

impl EcPublicJwk {
    /// Parses and validates a JWK from JSON text, with a typed error for every refusal.
    pub fn from_json(json: &str) -> Result<Self> {
        let fields: JwkFields = serde_json::from_str(json)?;
        Self::try_from(fields)
    }

    /// Validates a JWK already parsed as a JSON value (for example a header's `jwk`).
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        let fields: JwkFields = serde_json::from_value(value)?;
        Self::try_from(fields)
    }

    /// The bare JWK of a verifying key, with no `kid`, `use` or `alg`.
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        // An uncompressed encoding of a valid public key always has both coordinates.
        let x = point.x().map(b64::encode).unwrap_or_default();
        let y = point.y().map(b64::encode).unwrap_or_default();
        EcPublicJwk { key: *key, x, y, kid: None, key_use: None, alg: None }
    }

    /// The entry for `key` in the server's JWKS: `kid` is the RFC 7638 thumbprint, `use` is
    /// `sig`, `alg` is `ES256`.
    pub fn jwks_entry(key: &VerifyingKey) -> Self {
        let jwk = Self::from_verifying_key(key);
        let kid = jwk.thumbprint();
        jwk.with_kid(kid).with_use(USE_SIG).with_alg_es256()
    }

    /// Sets the `kid` member.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Sets the `use` member.
    #[must_use]
    pub fn with_use(mut self, key_use: impl Into<String>) -> Self {
        self.key_use = Some(key_use.into());
        self
    }

    /// Sets the `alg` member to `ES256`, the only algorithm a P-256 key is used with here.
    #[must_use]
    pub fn with_alg_es256(mut self) -> Self {
        self.alg = Some(ALG_ES256.to_owned());
        self
    }

    /// The same key without `kid`, `use` and `alg`: the form embedded in an enrollment header.
    #[must_use]
    pub fn bare(&self) -> Self {
        Self::from_verifying_key(&self.key)
    }

    /// The key, ready to verify ES256 signatures.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The `x` coordinate, base64url.
    pub fn x(&self) -> &str {
        &self.x
    }

    /// The `y` coordinate, base64url.
    pub fn y(&self) -> &str {
        &self.y
    }

    /// The `kid` member, if set.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The `use` member, if set.
    pub fn key_use(&self) -> Option<&str> {
        self.key_use.as_deref()
    }

    /// The `alg` member, if set (always `ES256` when set).
    pub fn alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }

    /// The RFC 7638 thumbprint: base64url SHA-256 of
    /// `{"crv":"P-256","kty":"EC","x":"...","y":"..."}` (required members only, in
    /// lexicographic order, no whitespace). It is the server key's `kid` and what the
    /// enrollment QR pins.
    pub fn thumbprint(&self) -> String {
        // x and y are base64url, so they need no JSON escaping.
        let canonical = format!(r#"{{"crv":"{CRV_P256}","kty":"{KTY_EC}","x":"{}","y":"{}"}}"#, self.x, self.y);
        b64::sha256_b64(canonical)
    }
}

impl From<&VerifyingKey> for EcPublicJwk {
    fn from(key: &VerifyingKey) -> Self {
        Self::from_verifying_key(key)
    }
}

impl From<VerifyingKey> for EcPublicJwk {
    fn from(key: VerifyingKey) -> Self {
        Self::from_verifying_key(&key)
    }
}

impl From<&EcPublicJwk> for VerifyingKey {
    fn from(jwk: &EcPublicJwk) -> Self {
        jwk.key
    }
}

impl From<EcPublicJwk> for VerifyingKey {
    fn from(jwk: EcPublicJwk) -> Self {
        jwk.key
    }
}

/// RFC 7638 thumbprint of a verifying key (see [`EcPublicJwk::thumbprint`]).
pub fn thumbprint(key: &VerifyingKey) -> String {
    EcPublicJwk::from_verifying_key(key).thumbprint()
}

/// A JSON Web Key Set, as served by `GET /v1/server-keys` and returned in
/// [`crate::messages::EnrollResponse::server_keys`].
///
/// Entries normally come from [`EcPublicJwk::jwks_entry`]. Since a `kid` is only a label, a
/// phone pinning a key from the enrollment QR should look it up with [`Jwks::by_thumbprint`],
/// which recomputes the thumbprint. Every entry must be a valid P-256 key: a set containing
/// any other kind of key fails to deserialise as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys, current signing key first.
    pub keys: Vec<EcPublicJwk>,
}

impl Jwks {
    /// A JWKS publishing each key as a [`EcPublicJwk::jwks_entry`].
    pub fn from_verifying_keys<'a>(keys: impl IntoIterator<Item = &'a VerifyingKey>) -> Self {
        Jwks { keys: keys.into_iter().map(EcPublicJwk::jwks_entry).collect() }
    }

    /// The first key whose `kid` member equals `kid`.
    pub fn by_kid(&self, kid: &str) -> Option<&EcPublicJwk> {
        self.keys.iter().find(|k| k.kid() == Some(kid))
    }

    /// The first key whose computed RFC 7638 thumbprint equals `thumbprint`.
    pub fn by_thumbprint(&self, thumbprint: &str) -> Option<&EcPublicJwk> {
        self.keys.iter().find(|k| k.thumbprint() == thumbprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use sha2::{Digest as _, Sha256};

    /// The public key of RFC 7515 appendix A.3.
    pub(crate) const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    pub(crate) const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn a3_json() -> String {
        format!(r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{A3_Y}"}}"#)
    }

    fn test_key(seed: u8) -> VerifyingKey {
        let sk = SigningKey::from_slice(&[seed; 32]).unwrap();
        *sk.verifying_key()
    }

    #[test]
    fn parses_and_reserialises_minimal_jwk() {
        let jwk = EcPublicJwk::from_json(&a3_json()).unwrap();
        assert_eq!(jwk.x(), A3_X);
        assert_eq!(jwk.y(), A3_Y);
        assert_eq!(jwk.kid(), None);
        assert_eq!(serde_json::to_string(&jwk).unwrap(), a3_json());
    }

    #[test]
    fn tolerates_extra_members_and_keeps_kid_use_alg() {
        let json = format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{A3_Y}","kid":"k1","use":"sig","alg":"ES256","key_ops":["verify"],"ext":true}}"#
        );
        let jwk = EcPublicJwk::from_json(&json).unwrap();
        assert_eq!(jwk.kid(), Some("k1"));
        assert_eq!(jwk.key_use(), Some("sig"));
        assert_eq!(jwk.alg(), Some("ES256"));
        assert_eq!(
            serde_json::to_string(&jwk).unwrap(),
            format!(r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{A3_Y}","kid":"k1","use":"sig","alg":"ES256"}}"#)
        );
        assert_eq!(serde_json::to_string(&jwk.bare()).unwrap(), a3_json());
    }

    #[test]
    fn verifying_key_round_trip() {
        let vk = test_key(7);
        let jwk = EcPublicJwk::from(&vk);
        let json = serde_json::to_string(&jwk).unwrap();
        let back: EcPublicJwk = serde_json::from_str(&json).unwrap();
        assert_eq!(VerifyingKey::from(&back), vk);
        assert_eq!(back, jwk);
    }

    #[test]
    fn off_curve_point_is_refused() {
        // Same x, y changed by one in its last byte: no longer on P-256.
        let mut y = b64::decode(A3_Y).unwrap();
        y[31] ^= 1;
        let json = format!(r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{}"}}"#, b64::encode(&y));
        assert_eq!(EcPublicJwk::from_json(&json), Err(Error::OffCurve));
        // Through plain serde the same refusal surfaces as JSON error text.
        assert!(matches!(
            serde_json::from_str::<EcPublicJwk>(&json),
            Err(e) if e.to_string().contains("not on the P-256 curve")
        ));
    }

    #[test]
    fn coordinate_above_field_prime_is_refused() {
        let json = format!(r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{A3_Y}"}}"#, b64::encode([0xff; 32]));
        assert_eq!(EcPublicJwk::from_json(&json), Err(Error::OffCurve));
    }

    #[test]
    fn wrong_kty_crv_alg_are_refused() {
        let wrong_crv = format!(r#"{{"kty":"EC","crv":"P-384","x":"{A3_X}","y":"{A3_Y}"}}"#);
        assert_eq!(EcPublicJwk::from_json(&wrong_crv), Err(Error::UnsupportedCurve("P-384".into())));
        let wrong_kty = format!(r#"{{"kty":"OKP","crv":"P-256","x":"{A3_X}","y":"{A3_Y}"}}"#);
        assert_eq!(EcPublicJwk::from_json(&wrong_kty), Err(Error::UnsupportedKeyType("OKP".into())));
        let wrong_alg = format!(r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{A3_Y}","alg":"ES384"}}"#);
        assert_eq!(EcPublicJwk::from_json(&wrong_alg), Err(Error::UnsupportedAlg("ES384".into())));
    }

    #[test]
    fn bad_coordinates_and_private_member_are_refused() {
        let short = format!(r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{A3_Y}"}}"#, b64::encode([1u8; 31]));
        assert!(matches!(EcPublicJwk::from_json(&short), Err(Error::InvalidKey(_))));
        let padded = format!(r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}=","y":"{A3_Y}"}}"#);
        assert_eq!(EcPublicJwk::from_json(&padded), Err(Error::BadEncoding));
        let missing_y = format!(r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}"}}"#);
        assert!(matches!(EcPublicJwk::from_json(&missing_y), Err(Error::InvalidKey(_))));
        let private = format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{A3_Y}","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}}"#
        );
        assert!(matches!(EcPublicJwk::from_json(&private), Err(Error::InvalidKey(_))));
        assert!(matches!(EcPublicJwk::from_json("[1,2]"), Err(Error::Json(_))));
    }

    #[test]
    fn thumbprint_matches_hand_built_rfc7638_input() {
        let jwk = EcPublicJwk::from_json(&a3_json()).unwrap();
        // Built by hand from RFC 7638 §3: required members, sorted, no whitespace.
        let input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{A3_X}","y":"{A3_Y}"}}"#);
        let expected = b64::encode(Sha256::digest(input.as_bytes()));
        assert_eq!(jwk.thumbprint(), expected);
        // Independently computed (Python hashlib/base64) for the RFC 7515 A.3 key.
        assert_eq!(jwk.thumbprint(), A3_THUMBPRINT);
        // Optional members do not change it.
        assert_eq!(jwk.clone().with_kid("x").with_use("sig").thumbprint(), A3_THUMBPRINT);
        assert_eq!(thumbprint(jwk.verifying_key()), A3_THUMBPRINT);
    }

    pub(crate) const A3_THUMBPRINT: &str = "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U";

    #[test]
    fn jwks_entries_and_lookup() {
        let (a, b) = (test_key(1), test_key(2));
        let jwks = Jwks::from_verifying_keys([&a, &b]);
        let json = serde_json::to_string(&jwks).unwrap();
        let back: Jwks = serde_json::from_str(&json).unwrap();
        assert_eq!(back, jwks);
        let entry = &back.keys[1];
        assert_eq!(entry.kid(), Some(thumbprint(&b).as_str()));
        assert_eq!(entry.key_use(), Some("sig"));
        assert_eq!(entry.alg(), Some("ES256"));
        assert!(json.starts_with(r#"{"keys":[{"kty":"EC","crv":"P-256","x":""#));
        assert_eq!(back.by_kid(&thumbprint(&a)).map(|k| *k.verifying_key()), Some(a));
        assert_eq!(back.by_thumbprint(&thumbprint(&b)).map(|k| *k.verifying_key()), Some(b));
        assert_eq!(back.by_thumbprint("nope"), None);
    }
}
