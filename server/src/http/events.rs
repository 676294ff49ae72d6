//! `GET /v1/events`: the audit log.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{Json, Query};
use super::problem::Problem;
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::store;

/// Filters for the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only this user's events.
    user_id: Option<String>,
    /// Only events after this event id (exclusive).
    after: Option<String>,
    /// At most this many (1-1000, default 100).
    limit: Option<i64>,
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventPage {
    /// Oldest first.
    events: Vec<Event>,
    /// Pass as `after` to read the next page; absent when this page is the last one for now.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<String>,
}

/// Reads the audit log, oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", security(("api_key" = [])),
    params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 422, description = "invalid_limit", body = Problem)))]
pub(super) async fn list_events(
    State(state): State<AppState>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventPage>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::invalid("invalid_limit", "limit must be between 1 and 1000"));
    }
    let rows = store::events::list(state.store.reader(), q.user_id.as_deref(), q.after.as_deref(), limit).await?;
    let events = rows.into_iter().map(Event::try_from).collect::<Result<Vec<_>>>()?;
    let next_after = (events.len() as i64 == limit).then(|| events.last().map(|e| e.id.clone())).flatten();
    Ok(Json(EventPage { events, next_after }))
}
