//! A phone and an RP backend for tests, over real HTTP. The phone uses `assent-protocol` the
//! way the SDK does, but exposes every step so tests can tamper with each one.

use assent_protocol::jws::{self, JwsType, KeyRef};
use assent_protocol::messages::{
    ChallengeClaims, Decision, EnrollClaims, EnrollResponse, Platform, ProofClaims, PushProvider, PushRegistration,
    ResponseClaims, challenge_hash, new_jti, proof_authorization,
};
use assent_protocol::p256::ecdsa::{SigningKey, VerifyingKey};
use assent_protocol::{EcPublicJwk, EnrollUri};
use serde_json::{Value, json};

/// An HTTP answer: status, headers and the body as JSON (or a JSON string if not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: Value,
}

impl Resp {
    /// Reads a response.
    pub async fn from_response(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp { status, headers, body }
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "body: {}", self.body);
        &self.body
    }

    /// Asserts a problem+json answer with this status and code.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.headers["content-type"], "application/problem+json", "body: {}", self.body);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
    }
}

/// An RP backend holding an API key.
#[derive(Debug, Clone)]
pub struct Rp {
    http: reqwest::Client,
    /// Server base URL.
    pub base: String,
    key: String,
}

impl Rp {
    /// An RP for the server at `base`.
    pub fn new(base: &str, key: &str) -> Rp {
        Rp { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned(), key: key.to_owned() }
    }

    /// Sends a request with the API key.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        Resp::from_response(req.send().await.unwrap()).await
    }

    /// `POST` with JSON.
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `GET`.
    pub async fn get(&self, path: &str) -> Resp {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Creates the user (or updates the display name).
    pub async fn user(&self, id: &str, display_name: &str) {
        let r = self
            .call(reqwest::Method::PUT, &format!("/v1/users/{id}"), Some(json!({"display_name": display_name})))
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.body);
    }

    /// A fresh enrollment URI for the user.
    pub async fn enrollment_uri(&self, user: &str) -> String {
        let r = self.post(&format!("/v1/users/{user}/enrollments"), json!({})).await;
        r.expect(201)["uri"].as_str().unwrap().to_owned()
    }

    /// Creates a challenge; the body's `user_id` is required.
    pub async fn challenge(&self, body: Value) -> Resp {
        self.post("/v1/challenges", body).await
    }
}

/// A phone with its own P-256 key.
#[derive(Debug, Clone)]
pub struct Phone {
    http: reqwest::Client,
    /// Server base URL.
    pub base: String,
    /// The device key.
    pub key: SigningKey,
    /// Assigned at enrollment.
    pub device_id: String,
    /// The pinned server key (its thumbprint came from the QR code).
    pub server_key: VerifyingKey,
    /// Clock offset in seconds applied to every `iat` (to test staleness).
    pub skew: i64,
}

/// The enroll JWS a phone with `key` would send for `uri`.
pub fn enroll_jws(key: &SigningKey, token: &str, push: PushRegistration, iat: i64) -> String {
    let jwk = EcPublicJwk::from_verifying_key(key.verifying_key());
    let claims =
        EnrollClaims { token: token.to_owned(), name: "Test phone".into(), platform: Platform::Other, push, iat };
    jws::sign(JwsType::Enroll, KeyRef::Jwk(&jwk), &claims, key).unwrap()
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Phone {
    /// Enrolls from an `assent://enroll` URI as a poll-only phone.
    pub async fn enroll(uri: &str) -> Phone {
        Self::enroll_with(uri, PushRegistration { provider: PushProvider::None, token: None }).await.unwrap()
    }

    /// Enrolls with a push registration; the error is the server's answer.
    pub async fn enroll_with(uri: &str, push: PushRegistration) -> Result<Phone, Resp> {
        let parsed = EnrollUri::parse(uri).unwrap();
        let key = SigningKey::random(&mut rand_core::OsRng);
        let body = enroll_jws(&key, &parsed.token, push, unix_now());
        let http = reqwest::Client::new();
        let r = Resp::from_response(
            http.post(format!("{}/v1/device/enroll", parsed.server))
                .header("content-type", "application/jose")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if r.status != 201 {
            return Err(r);
        }
        let answer: EnrollResponse = serde_json::from_value(r.body.clone()).unwrap();
        let pinned = answer.server_keys.by_thumbprint(&parsed.kid).expect("the QR's server key is in the JWKS");
        Ok(Phone {
            http,
            base: parsed.server,
            key,
            device_id: answer.device_id,
            server_key: *pinned.verifying_key(),
            skew: 0,
        })
    }

    /// A proof for a request, with a fresh jti.
    pub fn proof(&self, method: &str, path_and_query: &str, body: &[u8]) -> String {
        let mut claims = ProofClaims::new(method, path_and_query, body, unix_now() + self.skew).unwrap();
        claims.jti = new_jti().unwrap();
        jws::sign(JwsType::Proof, KeyRef::Kid(&self.device_id), &claims, &self.key).unwrap()
    }

    /// Sends a device request with `proof` as its Authorization.
    pub async fn send_with_proof(&self, method: &str, path: &str, body: Option<Vec<u8>>, proof: &str) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", proof_authorization(proof));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        Resp::from_response(req.send().await.unwrap()).await
    }

    /// Sends a device request with a fresh, correct proof.
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        let proof = self.proof(method, path, bytes.as_deref().unwrap_or_default());
        self.send_with_proof(method, path, bytes, &proof).await
    }

    /// Pending challenges: `[(id, jws)]`.
    pub async fn pending(&self) -> Vec<(String, String)> {
        let r = self.send("GET", "/v1/device/challenges", None).await;
        r.expect(200)["challenges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_str().unwrap().to_owned(), c["jws"].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Fetches one challenge and verifies it against the pinned key: `(jws, claims)`.
    pub async fn fetch(&self, id: &str) -> (String, ChallengeClaims) {
        let r = self.send("GET", &format!("/v1/device/challenges/{id}"), None).await;
        let jws = r.expect(200)["jws"].as_str().unwrap().to_owned();
        let claims = jws::decode_and_verify(&jws, JwsType::Challenge, &self.server_key).unwrap().claims().unwrap();
        (jws, claims)
    }

    /// The response JWS for a challenge.
    pub fn response_jws(&self, id: &str, challenge_jws: &str, decision: Decision, number: Option<u8>) -> String {
        let claims = ResponseClaims {
            jti: id.to_owned(),
            decision,
            chash: challenge_hash(challenge_jws),
            number,
            uv: true,
            iat: unix_now() + self.skew,
        };
        jws::sign(JwsType::Response, KeyRef::Kid(&self.device_id), &claims, &self.key).unwrap()
    }

    /// Posts a response JWS.
    pub async fn post_response(&self, id: &str, response: &str) -> Resp {
        self.send("POST", &format!("/v1/device/challenges/{id}/response"), Some(json!({ "response": response }))).await
    }

    /// Fetches, verifies and answers a challenge; picks the right number when one is asked.
    pub async fn answer(&self, id: &str, decision: Decision, expected_number: Option<u8>) -> Resp {
        let (jws, claims) = self.fetch(id).await;
        assert!(claims.aud.contains(&self.device_id));
        let number = match (&claims.number_choices, expected_number) {
            (Some(choices), Some(n)) => {
                assert!(choices.contains(&n), "{choices:?} lacks {n}");
                Some(n)
            }
            _ => None,
        };
        self.post_response(id, &self.response_jws(id, &jws, decision, number)).await
    }
}
