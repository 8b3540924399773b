//! Live delivery (DESIGN §5): traces, events and session changes as they are committed, to GraphQL subscriptions and
//! webhooks alike.
//!
//! - `listener`: one LISTEN connection per process turns `store::notify` wake-ups into in-process signals.
//! - `Live` (here): fans the signals out to the subscribers of the session or workflow they concern.
//! - `catch_up`: the one loop every stream runs: read by cursor until caught up, then wait for a wake-up.
//! - `traces`, `events`, `session_changes`, `session_state`: what each stream reads and how its cursor moves.
//! - `replay`: stored traces played back at their recorded pace.
//!
//! A notification is never the data, so nothing is lost when one is missed: a lagging subscriber, or all of them
//! after the listener reconnects, simply reads again from its cursor.

mod catch_up;
mod events;
mod listener;
mod replay;
mod session_changes;
pub mod session_state;
mod traces;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entity::{event, trace};
use futures::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

pub use replay::replay;
pub use session_changes::{ChangeBatch, SessionUpdate};

use crate::domain::EventType;
use crate::store::Store;
use crate::store::live::Follow;
use crate::store::notify::Wakeup;
use crate::store::replicas::Position;
use crate::store::time_travel::RowMark;

/// How many signals a subscriber may fall behind before it is told it lagged (and re-reads by cursor).
const SIGNAL_BUFFER: usize = 1024;

/// Items a stream reads ahead of its consumer: the bounded buffer between its reader and, say, a socket writer.
const SUBSCRIBER_BUFFER: usize = 256;

/// Streams re-read at least this often, as a safety net under the notifications.
pub const SAFETY_POLL: Duration = Duration::from_secs(10);

/// Rows read per round trip while catching up; also the most a stream holds in memory.
const PAGE: i64 = 500;

#[derive(Clone, Debug)]
enum Signal {
    Wakeup(Wakeup),
    /// Notifications may have been missed (listener reconnected): everyone re-reads by cursor.
    Resync,
}

/// The in-process fan-out of wake-ups, one bounded broadcast channel per followed session or workflow (or all), so a
/// commit wakes the subscribers of its session and workflow, not every subscriber of the process; and the trace
/// reads in flight, which subscribers woken by the same commit share.
#[derive(Clone, Default)]
pub struct Live {
    topics: Arc<Mutex<HashMap<Follow, broadcast::Sender<Signal>>>>,
    shared_reads: traces::SharedReads,
    /// With read replicas: the primary's WAL position at or after every commit whose wake-up has been dispatched.
    /// Every live read must see that far (`Store::following`), so a replica that has not replayed a commit yet is
    /// never read as if it had.
    seen: Option<Arc<AtomicU64>>,
}

impl Live {
    /// Starts the listener task on its own connection to the primary at `database_url`; it ends when `stop` turns
    /// true. `replicas`: reads may go to replicas, so wake-ups carry WAL positions.
    pub fn start(database_url: String, replicas: bool, stop: watch::Receiver<bool>) -> Live {
        let live = Live { seen: replicas.then(Arc::default), ..Live::default() };
        tokio::spawn(listener::run(database_url, live.clone(), stop));
        live
    }

    fn tracks_positions(&self) -> bool {
        self.seen.is_some()
    }

    fn saw(&self, position: Position) {
        if let Some(seen) = &self.seen {
            seen.fetch_max(position.0, Ordering::AcqRel);
        }
    }

    /// The store live reads use: reading, on a replica, at least as far as the latest wake-up.
    fn reader(&self, store: Store) -> Store {
        match &self.seen {
            Some(seen) => store.following(seen.clone()),
            None => store,
        }
    }

    /// Traces of a session or workflow with `seq` above `after`: the stored ones, then each as it commits.
    pub fn traces(&self, store: Store, follow: Follow, after: i64) -> ReceiverStream<trace::Model> {
        let signals = self.subscribe(follow.clone());
        let source = traces::Traces::new(self.reader(store), self.shared_reads.clone(), follow, after);
        detach(catch_up::run(source, signals))
    }

    /// Events of a session with `seq` above `after` (of the given types; all when empty), stored then live.
    pub fn events(
        &self,
        store: Store,
        session_id: String,
        types: Vec<EventType>,
        after: i64,
    ) -> ReceiverStream<event::Model> {
        let signals = self.subscribe(Follow::Session(session_id.clone()));
        let store = self.reader(store);
        detach(catch_up::run(events::Events { store, session_id, types, cursor: after }, signals))
    }

    /// Session starts and ends committed after `mark` (`Store::change_mark`), batch by batch with the mark each
    /// batch reaches.
    pub fn session_changes(&self, store: Store, follow: Follow, mark: String) -> ReceiverStream<ChangeBatch> {
        let signals = self.subscribe(follow.clone());
        // Snapshot marks from one server cannot be compared with another's replay: the primary answers these.
        let store = store.primary_only();
        detach(catch_up::run(session_changes::SessionChanges { store, follow, mark }, signals))
    }

    /// A session's node states: the whole state first, or with `after` what changed since that mark; then each
    /// change as it commits.
    pub fn session_state(
        &self,
        store: Store,
        session_id: String,
        after: Option<RowMark>,
    ) -> ReceiverStream<session_state::StateUpdate> {
        let signals = self.subscribe(Follow::Session(session_id.clone()));
        // A state read on a replica behind the previous read would step back: the primary answers these.
        let store = store.primary_only();
        detach(catch_up::run(session_state::SessionState { store, session_id, mark: after, known: None }, signals))
    }

    fn subscribe(&self, follow: Follow) -> broadcast::Receiver<Signal> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics.entry(follow).or_insert_with(|| broadcast::channel(SIGNAL_BUFFER).0).subscribe()
    }

    /// Passes a signal to the follows it concerns (a resync to all), and forgets follows nobody listens to any more.
    fn dispatch(&self, signal: Signal) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics.retain(|_, sender| sender.receiver_count() > 0);
        match &signal {
            Signal::Wakeup(w) => {
                for follow in
                    [Follow::Session(w.session_id.clone()), Follow::Workflow(w.workflow_id.clone()), Follow::All]
                {
                    if let Some(sender) = topics.get(&follow) {
                        let _ = sender.send(signal.clone());
                    }
                }
            }
            Signal::Resync => {
                for sender in topics.values() {
                    let _ = sender.send(Signal::Resync);
                }
            }
        }
    }
}

/// Runs a stream's reader on its own task, feeding a bounded buffer that the consumer drains.
///
/// The reader is polled whatever the consumer does, so a database read, once begun, always runs to completion and
/// releases its live-read slot and pooled connection: a reader only ever waits at a full buffer, holding nothing but
/// the rows it read. (Polled from a socket's task instead, a read that began just before a write blocked stayed
/// suspended mid-transaction for as long as the client did not read.) The task ends when the consumer drops the
/// stream.
fn detach<T: Send + 'static>(stream: impl Stream<Item = T> + Send + 'static) -> ReceiverStream<T> {
    let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = tx.closed() => break,
            };
            let Some(item) = item else { break };
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}
