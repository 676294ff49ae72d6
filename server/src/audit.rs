//! The audit log: every security-relevant change is recorded in the same transaction as
//! the change itself, so the log cannot miss an action that happened.

use crate::store::Tx;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::clock::{from_millis, to_millis};
use crate::error::Result;
use crate::ids::{IdKind, new_id};
use crate::store::events::{EventRow, NewEvent};

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
    /// The demo page's own backend (`/demo`), acting as a relying party.
    Demo,
}

impl Actor {
    fn as_str(&self) -> &str {
        match self {
            Actor::ApiKey(id) | Actor::Device(id) => id,
            Actor::Cli => "cli",
            Actor::System => "system",
            Actor::Demo => "demo",
        }
    }
}

/// An event given its id and serialized, for a store function that writes it together with
/// the change it records.
#[derive(Debug)]
pub struct Entry<'a> {
    id: String,
    at: i64,
    kind: &'a str,
    user_id: Option<&'a str>,
    actor: &'a Actor,
    data: String,
}

impl<'a> Entry<'a> {
    /// Prepares an event.
    pub fn new(
        at: OffsetDateTime,
        kind: &'a str,
        user_id: Option<&'a str>,
        actor: &'a Actor,
        data: &serde_json::Value,
    ) -> Result<Self> {
        let (id, data) = (new_id(IdKind::Event), serde_json::to_string(data)?);
        Ok(Entry { id, at: to_millis(at), kind, user_id, actor, data })
    }

    /// The row to write.
    pub fn row(&self) -> NewEvent<'_> {
        NewEvent {
            id: &self.id,
            at: self.at,
            kind: self.kind,
            user_id: self.user_id,
            actor: self.actor.as_str(),
            data: &self.data,
        }
    }
}

/// Appends an event to the log within the caller's transaction.
pub async fn record(
    conn: &mut Tx,
    at: OffsetDateTime,
    kind: &str,
    user_id: Option<&str>,
    actor: &Actor,
    data: serde_json::Value,
) -> Result<()> {
    let entry = Entry::new(at, kind, user_id, actor, &data)?;
    crate::store::events::append(conn, &entry.row()).await
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

/// Event kinds that are also delivered to webhook endpoints.
pub const WEBHOOK_KINDS: &[&str] = &[
    "challenge.approved",
    "challenge.denied",
    "challenge.fraud_reported",
    "challenge.expired",
    "challenge.failed",
    "device.enrolled",
    "device.revoked",
    "passkey.registered",
    "passkey.deleted",
    "user.locked",
];

/// Records an audit event and, for the kinds in [`WEBHOOK_KINDS`], queues one webhook
/// message per interested endpoint, all in the caller's transaction. Returns whether a
/// webhook was queued (so the caller can wake the worker after commit).
pub async fn publish(
    conn: &mut Tx,
    webhooks: &[crate::config::WebhookEndpoint],
    at: OffsetDateTime,
    kind: &str,
    user_id: Option<&str>,
    actor: &Actor,
    data: serde_json::Value,
) -> Result<bool> {
    record(conn, at, kind, user_id, actor, data.clone()).await?;
    if !WEBHOOK_KINDS.contains(&kind) {
        return Ok(false);
    }
    let mut body_data = match data {
        serde_json::Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("value".into(), other);
            map
        }
    };
    if let Some(user_id) = user_id {
        body_data.insert("user_id".into(), user_id.into());
    }
    let timestamp = at.format(&time::format_description::well_known::Rfc3339).map_err(crate::error::Error::internal)?;
    let payload =
        serde_json::to_string(&serde_json::json!({ "type": kind, "timestamp": timestamp, "data": body_data }))?;
    let mut queued = false;
    for endpoint in webhooks.iter().filter(|e| e.wants(kind)) {
        let id = crate::ids::new_id(crate::ids::IdKind::WebhookMessage);
        crate::store::webhooks::enqueue(conn, &id, &endpoint.url, kind, &payload, to_millis(at)).await?;
        queued = true;
    }
    Ok(queued)
}
