//! The phone's trust decisions, with no I/O: pinning the server key at enrollment, verifying a
//! challenge (pinned key, signature, id, audience, user, expiry), checking ids before they go
//! into a URL, and checking a picked number against the challenge's choices.

use assent_protocol::jws::{self, JwsType, VerifiedJws};
use assent_protocol::{ChallengeClaims, EcPublicJwk, Jwks};

use crate::error::{Error, Result};

/// Longest id accepted from a server or an app.
const MAX_ID_LEN: usize = 128;

/// Checks that `value` is an id of the kind `prefix` (`dev_`, `chl_`) made only of URL-safe
/// characters, so it can be put into a request path as is. Ids come from push payloads and
/// app code: without this, `../` in one would change which route a signed proof is sent to.
pub(crate) fn check_id(kind: &'static str, prefix: &str, value: &str) -> Result<()> {
    let ok = value.len() <= MAX_ID_LEN
        && value.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(Error::InvalidId { kind, value: value.chars().take(MAX_ID_LEN).collect() }) }
}

/// The key to pin from an enrollment answer: the one in `server_keys` whose RFC 7638
/// thumbprint is `kid` from the QR code (recomputed, not the `kid` label). Returned bare with
/// `kid` set to that thumbprint.
pub(crate) fn pin_server_key(server_keys: &Jwks, kid: &str) -> Result<EcPublicJwk> {
    server_keys
        .by_thumbprint(kid)
        .map(|key| key.bare().with_kid(kid))
        .ok_or_else(|| Error::PinnedKeyMissing { kid: kid.to_owned() })
}

/// Who the phone is, for checking a challenge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verifier<'a> {
    /// The pinned server key.
    pub pinned: &'a EcPublicJwk,
    /// This device's id (must be in `aud`).
    pub device_id: &'a str,
    /// This device's user (must be `sub`).
    pub user_id: &'a str,
}

/// A challenge that passed every check.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedChallenge {
    pub claims: ChallengeClaims,
    pub jws: VerifiedJws,
}

impl Verifier<'_> {
    /// Verifies a challenge JWS: `typ`, header rules, `kid` equal to the pinned thumbprint,
    /// signature under the pinned key, `jti` equal to `expected_id` when given, this device in
    /// `aud`, this user as `sub`, and not expired at `now`.
    pub fn challenge(&self, token: &str, expected_id: Option<&str>, now: i64) -> Result<VerifiedChallenge> {
        let unverified = jws::decode(token, JwsType::Challenge).map_err(Error::ChallengeInvalid)?;
        let pinned_kid = self.pinned.thumbprint();
        let kid = unverified.header().kid().unwrap_or_default();
        if kid != pinned_kid {
            return Err(Error::UnknownChallengeKey { found: kid.to_owned(), pinned: pinned_kid });
        }
        let verified = unverified.verify(self.pinned.verifying_key()).map_err(Error::ChallengeInvalid)?;
        let claims: ChallengeClaims = verified.claims().map_err(Error::ChallengeInvalid)?;
        if let Some(expected) = expected_id
            && claims.jti != expected
        {
            return Err(Error::ChallengeIdMismatch { requested: expected.to_owned(), found: claims.jti });
        }
        // A server-sent id that is unsafe in a path is a bad message, not bad app input.
        if check_id("challenge", "chl_", &claims.jti).is_err() {
            return Err(Error::ChallengeIdMismatch { requested: "a chl_ id".into(), found: claims.jti });
        }
        if !claims.is_addressed_to(self.device_id) {
            return Err(Error::NotAddressed { device_id: self.device_id.to_owned() });
        }
        if claims.sub != self.user_id {
            return Err(Error::WrongUser { expected: self.user_id.to_owned(), found: claims.sub });
        }
        if claims.is_expired(now) {
            return Err(Error::Expired { exp: claims.exp, now });
        }
        Ok(VerifiedChallenge { claims, jws: verified })
    }
}

/// Checks the number the user picked against the challenge: required (and one of the choices)
/// when the challenge has number matching, refused otherwise.
pub(crate) fn check_number(choices: Option<&[u8]>, number: Option<u32>) -> Result<Option<u8>> {
    match (choices, number) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(Error::InvalidInput("this challenge has no number matching; pass no number".into())),
        (Some(_), None) => {
            Err(Error::InvalidInput("this challenge uses number matching; pass the number the user picked".into()))
        }
        (Some(choices), Some(n)) => u8::try_from(n)
            .ok()
            .filter(|n| choices.contains(n))
            .map(Some)
            .ok_or_else(|| Error::InvalidInput(format!("{n} is not one of the offered numbers {choices:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use assent_protocol::jws::KeyRef;
    use assent_protocol::p256::ecdsa::SigningKey;
    use assent_protocol::{Context, Detail, b64};

    const NOW: i64 = 1_700_000_000;

    struct Server {
        key: SigningKey,
        jwk: EcPublicJwk,
    }

    impl Server {
        fn new() -> Self {
            let key = jws::generate_signing_key().unwrap();
            let jwk = EcPublicJwk::jwks_entry(key.verifying_key());
            Server { key, jwk }
        }
        fn kid(&self) -> String {
            self.jwk.thumbprint()
        }
        fn sign(&self, claims: &ChallengeClaims) -> String {
            jws::sign(JwsType::Challenge, KeyRef::Kid(&self.kid()), claims, &self.key).unwrap()
        }
    }

    fn claims() -> ChallengeClaims {
        ChallengeClaims {
            jti: "chl_1".into(),
            sub: "alice".into(),
            aud: vec!["dev_1".into()],
            iat: NOW - 10,
            exp: NOW + 110,
            title: "Pay EUR 250.00 to ACME".into(),
            details: vec![Detail { label: "Amount".into(), value: "EUR 250.00".into() }],
            context: Context::default(),
            number_choices: Some(vec![17, 42, 93]),
        }
    }

    fn verifier(pinned: &EcPublicJwk) -> Verifier<'_> {
        Verifier { pinned, device_id: "dev_1", user_id: "alice" }
    }

    #[test]
    fn a_good_challenge_verifies() {
        let server = Server::new();
        let pinned = pin_server_key(&Jwks { keys: vec![server.jwk.clone()] }, &server.kid()).unwrap();
        let token = server.sign(&claims());
        let verified = verifier(&pinned).challenge(&token, Some("chl_1"), NOW).unwrap();
        assert_eq!(verified.claims, claims());
        assert_eq!(verified.jws.token(), token);
        assert!(verifier(&pinned).challenge(&token, None, NOW).is_ok());
    }

    #[test]
    fn altered_in_transit_is_tampered() {
        let server = Server::new();
        let token = server.sign(&claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        // Same header and signature, payload with the amount changed.
        let mut changed = claims();
        changed.title = "Pay EUR 25000.00 to MALLORY".into();
        parts[1] = b64::encode(serde_json::to_vec(&changed).unwrap());
        let altered = parts.join(".");
        let err = verifier(&server.jwk).challenge(&altered, Some("chl_1"), NOW).unwrap_err();
        assert!(matches!(err, Error::ChallengeInvalid(assent_protocol::Error::BadSignature)), "{err:?}");
        // Garbage and a token of another kind are refused the same way.
        assert!(matches!(verifier(&server.jwk).challenge("a.b", None, NOW), Err(Error::ChallengeInvalid(_))));
        let response = jws::sign(JwsType::Response, KeyRef::Kid(&server.kid()), &claims(), &server.key).unwrap();
        assert!(matches!(
            verifier(&server.jwk).challenge(&response, None, NOW),
            Err(Error::ChallengeInvalid(assent_protocol::Error::WrongType { .. }))
        ));
    }

    #[test]
    fn signed_by_another_key_is_refused() {
        let server = Server::new();
        let attacker = Server::new();
        // With its own kid: not the pinned key.
        let token = attacker.sign(&claims());
        assert!(matches!(verifier(&server.jwk).challenge(&token, None, NOW), Err(Error::UnknownChallengeKey { .. })));
        // Claiming the pinned kid: the signature does not verify.
        let forged = jws::sign(JwsType::Challenge, KeyRef::Kid(&server.kid()), &claims(), &attacker.key).unwrap();
        assert!(matches!(
            verifier(&server.jwk).challenge(&forged, None, NOW),
            Err(Error::ChallengeInvalid(assent_protocol::Error::BadSignature))
        ));
    }

    #[test]
    fn addressed_elsewhere_or_expired_or_swapped_is_refused() {
        let server = Server::new();
        let v = verifier(&server.jwk);
        let other_device = ChallengeClaims { aud: vec!["dev_2".into()], ..claims() };
        assert!(matches!(v.challenge(&server.sign(&other_device), None, NOW), Err(Error::NotAddressed { .. })));
        let other_user = ChallengeClaims { sub: "bob".into(), ..claims() };
        assert!(matches!(v.challenge(&server.sign(&other_user), None, NOW), Err(Error::WrongUser { .. })));
        let token = server.sign(&claims());
        assert!(matches!(v.challenge(&token, None, NOW + 110), Err(Error::Expired { .. })));
        assert!(v.challenge(&token, None, NOW + 109).is_ok());
        // The server answered GET /challenges/chl_2 with chl_1.
        assert!(matches!(v.challenge(&token, Some("chl_2"), NOW), Err(Error::ChallengeIdMismatch { .. })));
        // A jti that is not a safe challenge id.
        let bad_id = ChallengeClaims { jti: "chl_../../v1/device".into(), ..claims() };
        assert!(matches!(v.challenge(&server.sign(&bad_id), None, NOW), Err(Error::ChallengeIdMismatch { .. })));
    }

    #[test]
    fn enrollment_refuses_a_jwks_without_the_pinned_key() {
        let server = Server::new();
        let swapped = Server::new();
        let jwks = Jwks { keys: vec![swapped.jwk.clone()] };
        assert!(matches!(pin_server_key(&jwks, &server.kid()), Err(Error::PinnedKeyMissing { .. })));
        // A kid label is not trusted: the thumbprint is recomputed.
        let relabelled = Jwks { keys: vec![swapped.jwk.clone().with_kid(server.kid())] };
        assert!(matches!(pin_server_key(&relabelled, &server.kid()), Err(Error::PinnedKeyMissing { .. })));
        let both = Jwks { keys: vec![swapped.jwk.clone(), server.jwk.clone()] };
        let pinned = pin_server_key(&both, &server.kid()).unwrap();
        assert_eq!(pinned.verifying_key(), server.jwk.verifying_key());
        assert_eq!(pinned.kid(), Some(server.kid().as_str()));
    }

    #[test]
    fn ids_are_checked_before_use_in_paths() {
        assert!(check_id("challenge", "chl_", "chl_0123abcdef").is_ok());
        assert!(check_id("challenge", "chl_", "chl_A-b_c").is_ok());
        for bad in ["chl_", "dev_1", "chl_../x", "chl_1/response", "chl_1?x", "chl_ 1", "chl_%2e", ""] {
            assert!(check_id("challenge", "chl_", bad).is_err(), "{bad}");
        }
        assert!(check_id("challenge", "chl_", &format!("chl_{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn number_matching_rules() {
        let choices = [17u8, 42, 93];
        assert_eq!(check_number(None, None).unwrap(), None);
        assert_eq!(check_number(Some(&choices), Some(42)).unwrap(), Some(42));
        assert!(check_number(Some(&choices), Some(43)).is_err());
        assert!(check_number(Some(&choices), Some(298)).is_err());
        assert!(check_number(Some(&choices), None).is_err());
        assert!(check_number(None, Some(42)).is_err());
    }
}
