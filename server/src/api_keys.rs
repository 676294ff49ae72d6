//! API keys for RP backends: `key_<id>.<secret>`, looked up by id, verified by comparing the
//! SHA-256 of the secret in constant time. Only the hash is stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::audit::{self, Actor};
use crate::clock::{from_millis, to_millis};
use crate::error::{Error, Result};
use crate::ids::{IdKind, new_id, random_bytes};
use crate::store::api_keys::StoredKey;
use crate::store::{self, Store};

/// A key as listed: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    /// `key_...`
    pub id: String,
    /// Operator-chosen name.
    pub name: String,
    /// When created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A freshly created key: the only moment its secret exists outside the caller's hands.
#[derive(Debug)]
pub struct NewApiKey {
    /// `key_...`
    pub id: String,
    /// The full bearer token to hand to the RP backend.
    pub token: String,
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates a key within `tx` and records the event.
pub async fn create_in(tx: &mut crate::store::Tx, name: &str, now: OffsetDateTime, actor: &Actor) -> Result<NewApiKey> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(Error::invalid("invalid_name", "an API key name must be 1 to 100 characters"));
    }
    let id = new_id(IdKind::ApiKey);
    let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    store::api_keys::insert(tx, &id, name, &hash_secret(&secret), to_millis(now)).await?;
    audit::record(tx, now, "api_key.created", None, actor, serde_json::json!({ "key_id": id, "name": name })).await?;
    Ok(NewApiKey { token: format!("{id}.{secret}"), id })
}

/// Creates a key and commits.
pub async fn create(store: &Store, name: &str, now: OffsetDateTime, actor: &Actor) -> Result<NewApiKey> {
    let mut tx = store.begin().await?;
    let key = create_in(&mut tx, name, now, actor).await?;
    tx.commit().await?;
    Ok(key)
}

/// Every key, oldest first.
pub async fn list(store: &Store) -> Result<Vec<ApiKeyInfo>> {
    let rows = store::api_keys::list(store.reader()).await?;
    Ok(rows
        .into_iter()
        .map(|r| ApiKeyInfo {
            id: r.id,
            name: r.name,
            created_at: from_millis(r.created_at),
            revoked_at: r.revoked_at.map(from_millis),
        })
        .collect())
}

/// Revokes a key; `not_found` when there is no such active key.
pub async fn revoke(store: &Store, id: &str, now: OffsetDateTime, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    if !store::api_keys::revoke(&mut tx, id, to_millis(now)).await? {
        return Err(Error::NotFound("active API key"));
    }
    audit::record(&mut tx, now, "api_key.revoked", None, actor, serde_json::json!({ "key_id": id })).await?;
    tx.commit().await?;
    Ok(())
}

const REFUSED: Error = Error::Unauthorized("unknown or revoked API key");

/// A bearer token as presented, before the store is asked: the key id it names and the hash
/// of its secret. [`ApiKeyClaim::check`] decides it on the key as stored, which a caller may
/// read in the statement of its own first read.
#[derive(Clone)]
pub struct ApiKeyClaim {
    /// The `key_...` id the token names; the caller's id once checked.
    pub id: String,
    secret_hash: String,
}

impl std::fmt::Debug for ApiKeyClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyClaim").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ApiKeyClaim {
    /// Reads a bearer token; refuses one that cannot be a key's.
    pub fn parse(token: &str) -> Result<Self> {
        let (id, secret) = token.split_once('.').ok_or(REFUSED)?;
        if !id.starts_with(IdKind::ApiKey.prefix()) || id.len() > 64 {
            return Err(REFUSED);
        }
        Ok(ApiKeyClaim { id: id.to_owned(), secret_hash: hash_secret(secret) })
    }

    /// Accepts the claim when the key it names exists (`stored`, read by the caller), is not
    /// revoked, and the secret matches (their hashes compared in constant time).
    pub fn check(&self, stored: Option<&StoredKey>) -> Result<()> {
        let Some(stored) = stored else { return Err(REFUSED) };
        let matches: bool = self.secret_hash.as_bytes().ct_eq(stored.hash.as_bytes()).into();
        if !matches || stored.revoked_at.is_some() {
            return Err(REFUSED);
        }
        Ok(())
    }

    /// Checks the claim on its own read of the key.
    pub async fn authenticate(&self, store: &Store) -> Result<()> {
        let row = store::api_keys::get(store.reader(), &self.id).await?;
        self.check(row.map(|r| StoredKey { hash: r.key_hash, revoked_at: r.revoked_at }).as_ref())
    }
}
