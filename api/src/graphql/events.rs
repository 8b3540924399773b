//! Events: `events`, `recordEvents`, and the `TraceEvent` type.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, ID, InputObject, Json, Object};
use chrono::{DateTime, Utc};
use entity::event;

use super::pagination::{PageArgs, connection};
use super::traces::RecordResult;
use super::{id_arg, limits, store};
use crate::domain::EventType;
use crate::error::Gql;
use crate::store::cursor::{CursorKey, EventKey, SeqKey};
use crate::store::events::EventFilter;
use crate::store::ingest::NewEvent;

/// Something a node reported: input, output, error, log line, start or completion.
pub struct TraceEvent(pub event::Model);

pub fn event_cursor(m: &event::Model) -> String {
    EventKey(SeqKey { at: m.timestamp, seq: m.seq }).encode()
}

/// Something a node reported: input, output, error, log line, start or completion.
#[Object]
impl TraceEvent {
    /// The id the client gave, or the generated one (UUIDv7).
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The session it belongs to.
    async fn session_id(&self) -> ID {
        ID(self.0.session_id.clone())
    }
    /// The workflow of the event's session.
    async fn workflow_id(&self) -> &str {
        &self.0.workflow_id
    }
    /// The node that reported it.
    async fn node_id(&self) -> &str {
        &self.0.node_id
    }
    /// The port it concerns, if any.
    async fn port_id(&self) -> Option<&str> {
        self.0.port_id.as_deref()
    }
    /// When it happened.
    async fn timestamp(&self) -> DateTime<Utc> {
        self.0.timestamp
    }
    /// What kind of event it is.
    async fn event_type(&self) -> EventType {
        self.0.event_type
    }
    /// Free JSON the node reported.
    async fn data(&self) -> Option<Json<serde_json::Value>> {
        self.0.data.clone().map(Json)
    }
    /// Milliseconds.
    async fn duration(&self) -> Option<f64> {
        self.0.duration
    }
    /// Free JSON about the event.
    async fn metadata(&self) -> Option<Json<serde_json::Value>> {
        self.0.metadata.clone().map(Json)
    }
    /// Server-assigned position in commit order (a 64-bit integer as a decimal string).
    async fn seq(&self) -> String {
        self.0.seq.to_string()
    }
}

/// An event to record: something a node reported.
#[derive(InputObject)]
pub struct EventInput {
    /// Client-chosen id: the idempotency key, stored at most once per session whatever the timestamp (a repeat is
    /// counted as a duplicate and changes nothing). 1 to 128 characters, none a control character (U+0000–U+001F,
    /// U+007F–U+009F). Generated (UUIDv7, sorting by time) when absent.
    pub id: Option<ID>,
    /// The node that reported it.
    pub node_id: String,
    /// The port it concerns, if any.
    pub port_id: Option<String>,
    /// What kind of event it is.
    pub event_type: EventType,
    /// When it happened (2000–2100).
    pub timestamp: DateTime<Utc>,
    /// Free JSON the node reported.
    pub data: Option<Json<serde_json::Value>>,
    /// Milliseconds, >= 0.
    pub duration: Option<f64>,
    /// Free JSON about the event.
    pub metadata: Option<Json<serde_json::Value>>,
}

/// `totalCount` of an event list, counted only when asked for.
pub struct EventTotal(EventFilter);

#[Object]
impl EventTotal {
    /// Events matching the filter, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        store(ctx).count_events(&self.0).await.gql()
    }
}

pub type EventConnection = Connection<String, TraceEvent, EventTotal, EmptyFields>;

pub async fn events_page(
    ctx: &Context<'_>,
    filter: EventFilter,
    args: PageArgs,
) -> async_graphql::Result<EventConnection> {
    let page = args.page::<EventKey>(limits(ctx))?;
    let rows = store(ctx).events(&filter, &page).await.gql()?;
    Ok(connection(rows, event_cursor, TraceEvent, EventTotal(filter)))
}

#[derive(Default)]
pub struct EventsQuery;

#[Object]
impl EventsQuery {
    /// Events of a session, oldest first. `from`/`to` are inclusive; no `eventTypes` means all.
    #[expect(clippy::too_many_arguments, reason = "one GraphQL argument each")]
    #[graphql(complexity = "super::pagination::cost(first, last, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        node_id: Option<String>,
        event_types: Option<Vec<EventType>>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<EventConnection> {
        let session_id = id_arg("sessionId", session_id)?;
        let filter = EventFilter { session_id, from, to, node_id, event_types: event_types.unwrap_or_default() };
        events_page(ctx, filter, PageArgs { first, after, last, before }).await
    }
}

#[derive(Default)]
pub struct EventsMutation;

#[Object]
impl EventsMutation {
    /// Stores a batch of events of one session, all or nothing. Retrying with the same ids stores nothing twice, also
    /// when their timestamps changed.
    async fn record_events(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        events: Vec<EventInput>,
    ) -> async_graphql::Result<RecordResult> {
        let events = events
            .into_iter()
            .map(|e| NewEvent {
                id: e.id.map(|id| id.0),
                node_id: e.node_id,
                port_id: e.port_id,
                event_type: e.event_type,
                timestamp: e.timestamp,
                data: e.data.map(|j| j.0),
                duration: e.duration,
                metadata: e.metadata.map(|j| j.0),
            })
            .collect();
        let result = store(ctx).record_events(limits(ctx), &session_id, events).await;
        crate::metrics::ingest("events", &result);
        result.gql().map(RecordResult::from)
    }
}
