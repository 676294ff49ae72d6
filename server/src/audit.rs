//! The audit log: every security-relevant change is recorded in the same transaction as
//! the change itself, so the log cannot miss an action that happened.

use serde::Serialize;
use sqlx::AnyConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::clock::{from_millis, to_millis};
use crate::error::Result;
use crate::ids::{IdKind, new_id};
use crate::store::events::EventRow;

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An RP backend, by API key id.
    ApiKey(String),
    /// A phone, by device id.
    Device(String),
    /// The operator at the command line.
    Cli,
    /// The server itself (expiry, bootstrap, workers).
    System,
}

impl Actor {
    fn as_str(&self) -> &str {
        match self {
            Actor::ApiKey(id) | Actor::Device(id) => id,
            Actor::Cli => "cli",
            Actor::System => "system",
        }
    }
}

/// Appends an event to the log within the caller's transaction.
pub async fn record(
    conn: &mut AnyConnection,
    at: OffsetDateTime,
    kind: &str,
    user_id: Option<&str>,
    actor: &Actor,
    data: serde_json::Value,
) -> Result<()> {
    let data = serde_json::to_string(&data)?;
    crate::store::events::append(
        conn,
        &new_id(IdKind::Event),
        to_millis(at),
        kind,
        user_id,
        actor.as_str(),
        &data,
    )
    .await
}

/// An audit event as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Event {
    /// `evt_...`; pass it as `after` to read on from here.
    pub id: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What happened, e.g. `user.created`, `api_key.revoked`.
    pub kind: String,
    /// The user concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Who did it: an API key id, a device id, `cli` or `system`.
    pub actor: String,
    /// Details; never secrets.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl TryFrom<EventRow> for Event {
    type Error = crate::error::Error;

    fn try_from(row: EventRow) -> Result<Self> {
        Ok(Event {
            id: row.id,
            at: from_millis(row.at),
            kind: row.kind,
            user_id: row.user_id,
            actor: row.actor,
            data: serde_json::from_str(&row.data)?,
        })
    }
}
