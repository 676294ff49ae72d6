//! The demo relying party served at `/demo`: a small web app with its own backend that signs
//! people up and in with passkeys and asks for push approvals, by calling the same domain
//! functions the RP API calls. Its sessions are signed cookies under a key kept in the
//! database, so every replica accepts them; the browser never sees an API key.
//!
//! Demo accounts live under their own prefix (`demo.`), so the page can neither sign in as nor
//! take over a user the real RP created.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::ids::random_bytes;
use crate::store::{Store, settings};
use crate::users::UserId;

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// Its script.
pub const APP_JS: &str = include_str!("app.js");
/// Its style sheet.
pub const STYLE_CSS: &str = include_str!("style.css");

/// The prefix of every demo account's user id.
pub const USER_PREFIX: &str = "demo.";

/// The session cookie's name.
pub const COOKIE: &str = "assent_demo";

/// How long a demo session lasts.
pub const SESSION_SECS: i64 = 8 * 60 * 60;

/// The key that signs demo session cookies: made once per database.
#[derive(Clone)]
pub struct DemoKey([u8; 32]);

impl std::fmt::Debug for DemoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DemoKey([redacted])")
    }
}

impl DemoKey {
    /// Reads the key from the database, creating it on the first start (once, even when
    /// several replicas start together).
    pub async fn load_or_create(store: &Store) -> Result<Self> {
        let mut tx = store.begin().await?;
        settings::insert_once(&mut tx, "demo_session_key", &hex::encode(random_bytes::<32>())).await?;
        let stored = settings::get(&mut tx, "demo_session_key").await?;
        tx.commit().await?;
        let bytes = stored.and_then(|hex| hex::decode(hex).ok()).ok_or_else(|| Error::internal("demo_session_key"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| Error::internal("demo_session_key is not 32 bytes"))?;
        Ok(DemoKey(key))
    }

    fn mac(&self, payload: &str) -> Result<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).map_err(Error::internal)?;
        mac.update(payload.as_bytes());
        Ok(mac)
    }

    /// A cookie value naming `user_id` until `now + SESSION_SECS`.
    pub fn issue(&self, user_id: &UserId, now: OffsetDateTime) -> Result<String> {
        let payload = format!("{}.{}", URL_SAFE_NO_PAD.encode(user_id.as_str()), now.unix_timestamp() + SESSION_SECS);
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload)?.finalize().into_bytes());
        Ok(format!("{payload}.{tag}"))
    }

    /// The user a cookie value names, when its signature holds and it has not expired.
    pub fn verify(&self, value: &str, now: OffsetDateTime) -> Option<UserId> {
        let (payload, tag) = value.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(payload).ok()?.verify_slice(&tag).ok()?;
        let (user, expires) = payload.split_once('.')?;
        if expires.parse::<i64>().ok()? <= now.unix_timestamp() {
            return None;
        }
        let user = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
        user.parse().ok()
    }
}

/// The demo account id for a username typed on the page.
pub fn user_id(username: &str) -> Result<UserId> {
    let name = username.trim().to_ascii_lowercase();
    if name.is_empty() || name.len() > 64 {
        return Err(Error::invalid("invalid_username", "a username is 1 to 64 characters"));
    }
    format!("{USER_PREFIX}{name}").parse().map_err(|_| {
        Error::invalid("invalid_username", "a username is letters, digits and . _ @ + - (an email address works)")
    })
}

/// The username shown for a demo account.
pub fn username(user_id: &str) -> &str {
    user_id.strip_prefix(USER_PREFIX).unwrap_or(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_signed_and_expire() {
        let key = DemoKey([7; 32]);
        let now = OffsetDateTime::now_utc();
        let user = user_id("Alice@Example.com").unwrap();
        assert_eq!(user.as_str(), "demo.alice@example.com");
        let cookie = key.issue(&user, now).unwrap();
        assert_eq!(key.verify(&cookie, now), Some(user.clone()));
        assert_eq!(key.verify(&cookie, now + time::Duration::seconds(SESSION_SECS)), None);
        assert_eq!(DemoKey([8; 32]).verify(&cookie, now), None);
        let (payload, tag) = cookie.rsplit_once('.').unwrap();
        let forged = format!(
            "{}.{}",
            payload.replacen(&URL_SAFE_NO_PAD.encode("demo.alice@example.com"), &URL_SAFE_NO_PAD.encode("demo.bob"), 1),
            tag
        );
        assert_eq!(key.verify(&forged, now), None);
        assert!(user_id("").is_err() && user_id("has space").is_err());
    }
}
