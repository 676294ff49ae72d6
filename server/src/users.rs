//! Users: the RP's ids, with a display name and the phone and email used for fallback codes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::audit::{self, Actor};
use crate::clock::{from_millis, to_millis};
use crate::error::{Error, Result};
use crate::store::{self, Store, flag, users::UserRow};

/// A user id chosen by the RP: 1 to 128 characters of `[A-Za-z0-9._@+-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(String);

impl FromStr for UserId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let ok = (1..=128).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'));
        if ok {
            Ok(UserId(s.to_owned()))
        } else {
            Err(Error::invalid("invalid_user_id", "a user id is 1 to 128 characters of A-Z a-z 0-9 . _ @ + -"))
        }
    }
}

impl UserId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a phone number written in international form and returns it in E.164.
pub fn normalize_phone(input: &str) -> Result<String> {
    let invalid =
        || Error::invalid("invalid_phone", "phone must be a valid number in international format, e.g. +14155550123");
    let number = phonenumber::parse(None, input.trim()).map_err(|_| invalid())?;
    if !phonenumber::is_valid(&number) {
        return Err(invalid());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// Checks an email address (RFC 5322 addr-spec, via a library) and trims it.
pub fn normalize_email(input: &str) -> Result<String> {
    let trimmed = input.trim();
    let parsed = email_address::EmailAddress::parse_with_options(
        trimmed,
        email_address::Options::default().without_display_text().without_domain_literal(),
    )
    .map_err(|e| Error::invalid("invalid_email", format!("email is not a valid address: {e}")))?;
    if !parsed.domain().contains('.') {
        return Err(Error::invalid("invalid_email", "email domain must be fully qualified"));
    }
    Ok(parsed.email())
}

/// A user as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    /// The RP's user id.
    pub id: String,
    /// Name shown on the phone during enrollment and approval.
    pub display_name: Option<String>,
    /// E.164 phone number for SMS fallback.
    pub phone: Option<String>,
    /// Whether a code sent to `phone` was ever entered correctly.
    pub phone_verified: bool,
    /// Email address for email fallback.
    pub email: Option<String>,
    /// Whether a code sent to `email` was ever entered correctly.
    pub email_verified: bool,
    /// When the user was first seen.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the user was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            display_name: r.display_name,
            phone: r.phone,
            phone_verified: flag(r.phone_verified),
            email: r.email,
            email_verified: flag(r.email_verified),
            created_at: from_millis(r.created_at),
            updated_at: from_millis(r.updated_at),
        }
    }
}

/// A field in an upsert: absent leaves it as it is, `null` clears it, a value sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Not in the request.
    #[default]
    Keep,
    /// `null`.
    Clear,
    /// A new value.
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Patch::Set(v),
            None => Patch::Clear,
        })
    }
}

/// `PUT /v1/users/{id}`: fields left out keep their value, `null` removes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpsert {
    /// Shown on the phone; up to 200 characters.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub display_name: Patch<String>,
    /// Any international format; stored as E.164.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "+14155550123")]
    pub phone: Patch<String>,
    /// An email address.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "jane@example.com")]
    pub email: Patch<String>,
}

fn apply<T: Clone>(current: &Option<T>, patch: Patch<T>) -> Option<T> {
    match patch {
        Patch::Keep => current.clone(),
        Patch::Clear => None,
        Patch::Set(v) => Some(v),
    }
}

/// Validates every field first, so a bad phone leaves nothing half-applied.
fn validated(upsert: UserUpsert) -> Result<UserUpsert> {
    let display_name = match upsert.display_name {
        Patch::Set(name) => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "invalid_display_name",
                    "display_name must be 1 to 200 printable characters",
                ));
            }
            Patch::Set(name)
        }
        other => other,
    };
    let phone = match upsert.phone {
        Patch::Set(p) => Patch::Set(normalize_phone(&p)?),
        other => other,
    };
    let email = match upsert.email {
        Patch::Set(e) => Patch::Set(normalize_email(&e)?),
        other => other,
    };
    Ok(UserUpsert { display_name, phone, email })
}

/// Creates or updates a user. Returns the user and whether it was created.
pub async fn upsert(
    store: &Store,
    id: &UserId,
    upsert: UserUpsert,
    now: OffsetDateTime,
    actor: &Actor,
) -> Result<(User, bool)> {
    let upsert = validated(upsert)?;
    let mut tx = store.begin().await?;
    let existing = store::users::get(&mut tx, id.as_str()).await?;
    let created = existing.is_none();
    let now_ms = to_millis(now);
    let old = existing.unwrap_or(UserRow {
        id: id.to_string(),
        display_name: None,
        phone: None,
        phone_verified: 0,
        email: None,
        email_verified: 0,
        created_at: now_ms,
        updated_at: now_ms,
    });
    let phone = apply(&old.phone, upsert.phone);
    let email = apply(&old.email, upsert.email);
    let new = UserRow {
        display_name: apply(&old.display_name, upsert.display_name),
        // A changed destination has not been proven to reach this user.
        phone_verified: if phone == old.phone { old.phone_verified } else { 0 },
        email_verified: if email == old.email { old.email_verified } else { 0 },
        phone,
        email,
        updated_at: now_ms,
        ..old.clone()
    };

    let mut changed = Vec::new();
    if new.display_name != old.display_name {
        changed.push("display_name");
    }
    if new.phone != old.phone {
        changed.push("phone");
    }
    if new.email != old.email {
        changed.push("email");
    }
    if created {
        store::users::upsert(&mut tx, &new).await?;
        audit::record(&mut tx, now, "user.created", Some(id.as_str()), actor, serde_json::json!({ "fields": changed }))
            .await?;
    } else if !changed.is_empty() {
        store::users::upsert(&mut tx, &new).await?;
        // A verified destination that changed is no longer verified: say so, because a
        // changed phone or email is what an account takeover looks like.
        let mut unverified = Vec::new();
        if old.phone_verified != 0 && new.phone_verified == 0 {
            unverified.push("phone");
        }
        if old.email_verified != 0 && new.email_verified == 0 {
            unverified.push("email");
        }
        let mut data = serde_json::json!({ "fields": changed });
        if !unverified.is_empty() {
            data["unverified"] = unverified.into();
        }
        audit::record(&mut tx, now, "user.updated", Some(id.as_str()), actor, data).await?;
    }
    tx.commit().await?;
    let user = if created || !changed.is_empty() { new } else { old };
    Ok((user.into(), created))
}

/// The user with this id.
pub async fn get(store: &Store, id: &UserId) -> Result<User> {
    store::users::get(store.reader(), id.as_str()).await?.map(User::from).ok_or(Error::NotFound("user"))
}

/// Deletes a user and everything registered for them.
pub async fn delete(store: &Store, id: &UserId, now: OffsetDateTime, actor: &Actor) -> Result<()> {
    let mut tx = store.begin().await?;
    if !store::users::delete(&mut tx, id.as_str()).await? {
        return Err(Error::NotFound("user"));
    }
    // Their devices can never sign anything again, even for a new user with the same id.
    let revoked = store::devices::revoke_all_for_user(&mut tx, id.as_str(), to_millis(now)).await?;
    store::challenges::cancel_pending_for_user(&mut tx, id.as_str(), to_millis(now)).await?;
    let passkeys = store::passkeys::delete_all_for_user(&mut tx, id.as_str()).await?;
    let data = serde_json::json!({ "devices_revoked": revoked, "passkeys_deleted": passkeys });
    audit::record(&mut tx, now, "user.deleted", Some(id.as_str()), actor, data).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        for ok in ["a", "alice@example.com", "u-1_2.3+4", &"x".repeat(128)] {
            assert!(ok.parse::<UserId>().is_ok(), "{ok}");
        }
        for bad in ["", "has space", "slash/", "ünï", &"x".repeat(129), "a%2F"] {
            assert!(matches!(bad.parse::<UserId>(), Err(Error::Invalid { code: "invalid_user_id", .. })), "{bad}");
        }
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(normalize_phone("+1 (415) 555-0123").ok().as_deref(), Some("+14155550123"));
        assert_eq!(normalize_phone("+44 20 7946 0958").ok().as_deref(), Some("+442079460958"));
        for bad in ["", "12345", "+1 555", "not a phone", "+999 123 456 789"] {
            assert!(matches!(normalize_phone(bad), Err(Error::Invalid { code: "invalid_phone", .. })), "{bad}");
        }
    }

    #[test]
    fn emails_are_checked() {
        assert_eq!(normalize_email(" jane@example.com ").ok().as_deref(), Some("jane@example.com"));
        for bad in ["", "jane", "jane@", "@example.com", "jane@localhost", "Jane <jane@example.com>", "a b@example.com"]
        {
            assert!(matches!(normalize_email(bad), Err(Error::Invalid { code: "invalid_email", .. })), "{bad}");
        }
    }
}
