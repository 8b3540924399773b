//! Subscriptions: traces and events as they are committed (resumable by cursor), session lifecycle updates, and
//! replay of stored traces at their original pace.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::connection::{Edge, EmptyFields};
use async_graphql::{Context, ID, Subscription as SubscriptionObject};
use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::events::TraceEvent;
use super::sessions::Session;
use super::traces::{Trace, trace_cursor};
use super::{id_arg, store};
use crate::domain::EventType;
use crate::error::{Gql, bad_input};
use crate::live::{Live, SAFETY_POLL, Signal, Topic, Wakeup, wait_for};
use crate::store::cursor::{CursorKey, Page, SeqKey, TraceKey};
use crate::store::live::Follow;
use crate::store::traces::TraceFilter;
use crate::store::{Store, StoreError};

/// Rows read per round trip while catching up; also the most a subscription holds in memory.
const PAGE: i64 = 500;

pub type TraceEdge = Edge<String, Trace, EmptyFields>;

/// A subscription's reads fail while the database is down: wait and try again instead of ending the stream.
async fn retry_pause(err: &StoreError) {
    tracing::debug!(%err, "live read failed; retrying");
    tokio::time::sleep(Duration::from_millis(500)).await;
}

fn live<'a>(ctx: &Context<'a>) -> &'a Live {
    ctx.data_unchecked::<Live>()
}

#[derive(Default)]
pub struct Subscription;

/// What woke a `sessionUpdates` subscriber.
enum Next {
    Notified(Wakeup),
    CatchUp,
}

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
        let mut cursor = match (&after, &follow) {
            (Some(c), _) => TraceKey::decode(c).gql()?.0.seq,
            (None, Follow::Session(_)) => 0,
            (None, Follow::Workflow(w)) => store.latest_trace_seq(w).await.gql()?,
        };
        // Subscribe before the first read, so nothing committed in between goes unnoticed.
        let mut signals = live(ctx).subscribe(match &follow {
            Follow::Session(id) => Topic::Session(id.clone()),
            Follow::Workflow(id) => Topic::Workflow(id.clone()),
        });
        let guard = SubscriberGauge::new("traces");
        Ok(async_stream::stream! {
            let _guard = guard;
            // The seq of the commit that woke us. A shared read that began before that commit may lack its rows:
            // then one read of our own (`fresh`) settles it.
            let (mut woken_for, mut fresh) = (0, false);
            loop {
                let read = if fresh {
                    store.traces_after(&follow, cursor, PAGE).await.map(Arc::<[_]>::from)
                } else {
                    store.traces_after_shared(&follow, cursor, PAGE).await
                };
                match read {
                    Ok(rows) => {
                        for row in rows.iter() {
                            cursor = row.seq;
                            yield Edge::new(trace_cursor(row), Trace(row.clone()));
                        }
                        if rows.len() as i64 == PAGE {
                            metrics::counter!("flowtrace_live_catchup_pages_total").increment(1);
                            fresh = false;
                            continue;
                        }
                        if cursor < woken_for && !fresh {
                            fresh = true;
                            continue;
                        }
                    }
                    Err(err) => retry_pause(&err).await,
                }
                fresh = false;
                let relevant = |w: &crate::live::Wakeup| {
                    w.kind == "trace" && w.seq > cursor && match &follow {
                        Follow::Session(id) => w.session_id == *id,
                        Follow::Workflow(id) => w.workflow_id == *id,
                    }
                };
                match wait_for(&mut signals, relevant).await {
                    Some(seq) => woken_for = seq,
                    None => break,
                }
            }
        })
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
        let types = event_types.unwrap_or_default();
        let mut signals = live(ctx).subscribe(Topic::Session(session_id.clone()));
        let guard = SubscriberGauge::new("events");
        let mut cursor = 0;
        Ok(async_stream::stream! {
            let _guard = guard;
            loop {
                match store.events_after(&session_id, &types, cursor, PAGE).await {
                    Ok(rows) => {
                        let full = rows.len() as i64 == PAGE;
                        for row in rows {
                            cursor = row.seq;
                            yield TraceEvent(row);
                        }
                        if full {
                            continue;
                        }
                    }
                    Err(err) => retry_pause(&err).await,
                }
                if wait_for(&mut signals, |w| w.kind == "event" && w.session_id == session_id && w.seq > cursor).await.is_none() {
                    break;
                }
            }
        })
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
        let mut mark = store.change_mark().await.gql()?;
        let mut signals = live(ctx).subscribe(workflow_id.clone().map_or(Topic::All, Topic::Workflow));
        let guard = SubscriberGauge::new("sessionUpdates");
        Ok(async_stream::stream! {
            let _guard = guard;
            // Changes delivered since the last catch-up (notified, or read by it), so none goes out twice. A catch-up
            // every SAFETY_POLL also catches what a notification alone would miss, and keeps this set small.
            let mut delivered: HashSet<i64> = HashSet::new();
            let mut poll = tokio::time::interval(SAFETY_POLL);
            poll.tick().await;
            loop {
                let next = tokio::select! {
                    signal = signals.recv() => match signal {
                        Ok(Signal::Wakeup(w)) => Next::Notified(w),
                        Ok(Signal::Resync) | Err(RecvError::Lagged(_)) => Next::CatchUp,
                        Err(RecvError::Closed) => break,
                    },
                    _ = poll.tick() => Next::CatchUp,
                };
                match next {
                    Next::Notified(w) => {
                        let ours = w.kind == "session" && workflow_id.as_ref().is_none_or(|id| *id == w.workflow_id);
                        if !ours || delivered.contains(&w.seq) {
                            continue;
                        }
                        // A failed read is not marked delivered: the next catch-up reads the change again.
                        if let Ok(found) = store.session(&w.session_id).await {
                            delivered.insert(w.seq);
                            if let Some(session) = found {
                                yield Session(session);
                            }
                        }
                    }
                    Next::CatchUp => {
                        let (changes, next_mark) = match store.session_changes_since(&mark, workflow_id.as_deref()).await {
                            Ok(read) => read,
                            Err(err) => {
                                retry_pause(&err).await;
                                continue;
                            }
                        };
                        let mut complete = true;
                        for change in &changes {
                            if delivered.contains(&change.seq) {
                                continue;
                            }
                            match store.session(&change.session_id).await {
                                Ok(found) => {
                                    delivered.insert(change.seq);
                                    if let Some(session) = found {
                                        yield Session(session);
                                    }
                                }
                                Err(err) => {
                                    // Keep the old mark: the next catch-up reads the rest again.
                                    retry_pause(&err).await;
                                    complete = false;
                                    break;
                                }
                            }
                        }
                        if complete {
                            // Everything the new mark saw is delivered; later catch-ups never return it again, and
                            // only notifications still queued for it need the set.
                            mark = next_mark;
                            delivered = changes.iter().map(|c| c.seq).collect();
                        }
                    }
                }
            }
        })
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
        Ok(async_stream::stream! {
            let mut page = Page::<TraceKey> { after: None, before: None, limit: PAGE as u64, from_end: false };
            let mut previous: Option<DateTime<Utc>> = None;
            loop {
                let rows = match store.traces(&filter, &page).await {
                    Ok(rows) => rows,
                    Err(err) => {
                        yield Err(crate::error::store_error(err));
                        break;
                    }
                };
                for row in rows.rows {
                    if let Some(prev) = previous {
                        let gap = (row.timestamp - prev).to_std().unwrap_or_default();
                        tokio::time::sleep(gap.div_f64(speed)).await;
                    }
                    previous = Some(row.timestamp);
                    page.after = Some(TraceKey(SeqKey { at: row.timestamp, seq: row.seq }));
                    yield Ok(Trace(row));
                }
                if !rows.has_next {
                    break;
                }
            }
        })
    }
}

/// NOT_FOUND for an unknown session. While the database is unreachable the subscription starts anyway: its reads
/// retry until the database is back, like those of subscriptions that were already open.
async fn session_must_exist(store: &Store, id: &str) -> async_graphql::Result<()> {
    match store.session(id).await {
        Ok(Some(_)) | Err(StoreError::Unavailable(_)) => Ok(()),
        Ok(None) => Err(crate::error::coded("NOT_FOUND", format!("session {id} does not exist"))),
        Err(err) => Err(crate::error::store_error(err)),
    }
}

/// Counts open subscriptions by kind in `/metrics` for as long as the stream lives.
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
