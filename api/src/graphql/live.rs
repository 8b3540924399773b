//! Subscriptions: traces and events as they are committed (resumable by cursor), session lifecycle updates, and
//! replay of stored traces at their original pace. How each stream catches up and stays live is `crate::live`'s;
//! here are the arguments, the start-up checks and the mapping to GraphQL types.

use std::sync::Arc;

use async_graphql::connection::{Edge, EmptyFields};
use async_graphql::{Context, ID, Subscription as SubscriptionObject};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use super::events::TraceEvent;
use super::sessions::Session;
use super::time_travel::SessionStateUpdate;
use super::traces::{Trace, trace_cursor};
use super::{id_arg, store};
use crate::domain::EventType;
use crate::error::{Gql, NOT_FOUND, bad_input, coded, store_error};
use crate::live::{Live, session_state};
use crate::store::cursor::{CursorKey, TraceKey};
use crate::store::live::Follow;
use crate::store::traces::TraceFilter;
use crate::store::{Store, StoreError};

pub type TraceEdge = Edge<String, Trace, EmptyFields>;

fn live<'a>(ctx: &Context<'a>) -> &'a Live {
    ctx.data_unchecked::<Live>()
}

#[derive(Default)]
pub struct Subscription;

/// Live streams: traces, events, session changes and node states as they are committed, resumable by cursor, and
/// replay of stored traces.
#[SubscriptionObject(name = "Subscription")]
impl Subscription {
    /// Traces of a session or a workflow as they are committed, each with its cursor. With `after` (a cursor from
    /// this subscription or the `traces` query): every trace committed after it, then live ones. Without it: for a
    /// session every stored trace first, for a workflow only new ones. Each trace is delivered once, in commit order
    /// (which is time order for clients that send in time order); reconnect with the last cursor to miss nothing.
    async fn traces(
        &self,
        ctx: &Context<'_>,
        session_id: Option<ID>,
        workflow_id: Option<String>,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = TraceEdge> + use<>> {
        let store = store(ctx).clone();
        let session_id = session_id.map(|id| id_arg("sessionId", id)).transpose()?;
        let follow = match (session_id, workflow_id) {
            (Some(id), None) => Follow::Session(id),
            (None, Some(id)) => Follow::Workflow(id),
            _ => return Err(bad_input("give exactly one of sessionId or workflowId")),
        };
        if let Follow::Session(id) = &follow {
            session_must_exist(&store, id).await?;
        }
        let after = match (&after, &follow) {
            (Some(c), _) => TraceKey::decode(c).gql()?.0.seq,
            (None, Follow::Workflow(w)) => {
                let (store, w) = (store.clone(), w.clone());
                detached_read(async move { store.latest_trace_seq(&w).await }).await.gql()?
            }
            (None, _) => 0,
        };
        let traces = live(ctx).traces(store, follow, after);
        // A row shared with other subscribers of the session is copied only now, as it is sent.
        let edges = traces.map(|row| Edge::new(trace_cursor(&row), Trace(Arc::unwrap_or_clone(row))));
        Ok(counted("traces", edges))
    }

    /// Events of a session as they are committed: every stored one first, then live ones, optionally only of the
    /// given types.
    async fn events(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        event_types: Option<Vec<EventType>>,
    ) -> async_graphql::Result<impl Stream<Item = TraceEvent> + use<>> {
        let session_id = id_arg("sessionId", session_id)?;
        let store = store(ctx).clone();
        session_must_exist(&store, &session_id).await?;
        let events = live(ctx).events(store, session_id, event_types.unwrap_or_default(), 0);
        Ok(counted("events", events.map(TraceEvent)))
    }

    /// Sessions of a workflow (or all) as they start and end (completed, failed, cancelled), each change once. A
    /// change the server was not notified of (while it reconnects to the database) arrives late, not never.
    async fn session_updates(
        &self,
        ctx: &Context<'_>,
        workflow_id: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = Session> + use<>> {
        let store = store(ctx).clone();
        // The mark before the subscription: a change committed in between is read by the first catch-up.
        let mark = {
            let store = store.clone();
            detached_read(async move { store.change_mark().await }).await.gql()?
        };
        let follow = workflow_id.map_or(Follow::All, Follow::Workflow);
        let changes = live(ctx).session_changes(store, follow, mark);
        let sessions = changes.flat_map(|batch| futures::stream::iter(batch.updates)).map(|u| Session::from(u.session));
        Ok(counted("sessionUpdates", sessions))
    }

    /// A session's node states, kept current: first the whole state now (`state`), then a message per node whose
    /// state changed, carrying only what changed (`node.changed` lists it), as commits arrive; a message with no
    /// `node` says the session's status alone changed. With `after` (any message's cursor) it sends what changed
    /// since, then goes on. Values are absolute, so a change applied twice changes nothing; applying the changes
    /// from any cursor onto the state at it gives the state now, as `sessionStateAt` computes it.
    async fn session_state(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = SessionStateUpdate> + use<>> {
        let session_id = id_arg("sessionId", session_id)?;
        let store = store(ctx).clone();
        session_must_exist(&store, &session_id).await?;
        let after = after.map(|c| session_state::decode(&session_id, &c)).transpose().gql()?;
        let updates = live(ctx).session_state(store, session_id, after);
        Ok(counted("sessionState", updates.map(SessionStateUpdate)))
    }

    /// Plays a session's stored traces in `[from, to]` back with their original spacing divided by `speed`
    /// (default 1; 10 plays ten times faster), then completes.
    async fn replay(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        speed: Option<f64>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Trace>> + use<>> {
        let speed = speed.unwrap_or(1.0);
        if !speed.is_finite() || speed <= 0.0 {
            return Err(bad_input(format!("speed must be a positive number, got {speed}")));
        }
        let session_id = id_arg("sessionId", session_id)?;
        let store: Store = store(ctx).clone();
        session_must_exist(&store, &session_id).await?;
        let filter = TraceFilter { session_id: Some(session_id), from, to, ..Default::default() };
        filter.validate().gql()?;
        Ok(crate::live::replay(store, filter, speed).map(|row| row.map(Trace).map_err(store_error)))
    }
}

/// NOT_FOUND for an unknown session. While the database is unreachable the subscription starts anyway: its reads
/// retry until the database is back, like those of subscriptions that were already open. Asked of the primary: a
/// client that starts a session and subscribes at once finds it there, whatever a replica has replayed.
async fn session_must_exist(store: &Store, id: &str) -> async_graphql::Result<()> {
    let (store, owned) = (store.primary_only(), id.to_owned());
    match detached_read(async move { store.session(&owned).await }).await {
        Ok(Some(_)) | Err(StoreError::Unavailable(_)) => Ok(()),
        Ok(None) => Err(coded(NOT_FOUND, format!("session {id} does not exist"))),
        Err(err) => Err(store_error(err)),
    }
}

/// Runs a read that starts a subscription on its own task. The socket's task polls the subscription until it
/// returns its stream, and may be writing to a client that does not read meanwhile: the read must not wait for it
/// holding a pooled connection.
async fn detached_read<T: Send + 'static>(
    read: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(read).await.unwrap_or_else(|err| Err(StoreError::internal(format!("read task failed: {err}"))))
}

/// Counts open subscriptions by kind in `/metrics` for as long as the stream lives.
fn counted<S: Stream>(kind: &'static str, stream: S) -> impl Stream<Item = S::Item> {
    let open = SubscriberGauge::new(kind);
    stream.map(move |item| {
        let _open = &open;
        item
    })
}

struct SubscriberGauge(&'static str);

impl SubscriberGauge {
    fn new(kind: &'static str) -> Self {
        metrics::gauge!("flowtrace_live_subscribers", "kind" => kind).increment(1.0);
        SubscriberGauge(kind)
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        metrics::gauge!("flowtrace_live_subscribers", "kind" => self.0).decrement(1.0);
    }
}
