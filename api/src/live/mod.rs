//! Live delivery (DESIGN §5): traces, events and session changes as they are committed, to GraphQL subscriptions and
//! webhooks alike.
//!
//! - `listener`: one LISTEN connection per process turns `store::notify` wake-ups into in-process signals.
//! - `Live` (here): keeps, per followed session or workflow, what has been announced so far, and wakes its
//!   subscribers when that moves.
//! - `catch_up`: the one loop every stream runs: read by cursor until caught up, then wait for a wake-up.
//! - `traces`, `events`, `session_changes`, `session_state`: what each stream reads and how its cursor moves.
//! - `replay`: stored traces played back at their recorded pace.
//!
//! A notification is never the data, so nothing is lost when one is missed: a subscriber compares the latest
//! announcement with its cursor, and after the listener reconnects every subscriber reads again from its cursor.

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
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

pub use replay::replay;
pub use session_changes::{ChangeBatch, SessionUpdate};

use crate::domain::EventType;
use crate::store::Store;
use crate::store::live::Follow;
use crate::store::notify::{Kind, Wakeup};
use crate::store::replicas::Position;
use crate::store::time_travel::RowMark;

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

/// What has been announced for one followed session or workflow (or all) so far: the highest `seq` each kind of
/// wake-up carried, and how many resyncs were asked for. Subscribers compare it with what they have read. Holding
/// only the latest values, a followed topic costs the same however many commits its subscribers are behind, and
/// none of them can fall behind the announcements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Announced {
    traces: i64,
    events: i64,
    sessions: i64,
    resyncs: u64,
}

impl Announced {
    /// Takes a wake-up in; whether anything moved.
    fn raise(&mut self, wakeup: &Wakeup) -> bool {
        let highest = match wakeup.kind {
            Kind::Trace => &mut self.traces,
            Kind::Event => &mut self.events,
            Kind::Session => &mut self.sessions,
        };
        let moved = wakeup.seq > *highest;
        *highest = (*highest).max(wakeup.seq);
        moved
    }
}

/// The in-process fan-out of wake-ups, one watch channel of `Announced` per followed session or workflow (or all), so
/// a commit wakes the subscribers of its session and workflow, not every subscriber of the process; and the trace
/// reads in flight, which subscribers woken by the same commit share.
#[derive(Clone, Default)]
pub struct Live {
    topics: Arc<Mutex<HashMap<Follow, watch::Sender<Announced>>>>,
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
    pub fn traces(&self, store: Store, follow: Follow, after: i64) -> ReceiverStream<Arc<trace::Model>> {
        let signals = self.subscribe(follow.clone());
        let source = traces::Traces::new(self.reader(store), self.shared_reads.clone(), follow, after);
        spawn_reader(|out| catch_up::run(source, signals, out))
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
        let source = events::Events { store, session_id, types, cursor: after };
        spawn_reader(|out| catch_up::run(source, signals, out))
    }

    /// Session starts and ends committed after `mark` (`Store::change_mark`), batch by batch with the mark each
    /// batch reaches.
    pub fn session_changes(&self, store: Store, follow: Follow, mark: String) -> ReceiverStream<ChangeBatch> {
        let signals = self.subscribe(follow.clone());
        // Snapshot marks from one server cannot be compared with another's replay: the primary answers these.
        let store = store.primary_only();
        let source = session_changes::SessionChanges { store, follow, mark };
        spawn_reader(|out| catch_up::run(source, signals, out))
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
        let source = session_state::SessionState { store, session_id, mark: after, known: None };
        spawn_reader(|out| catch_up::run(source, signals, out))
    }

    fn subscribe(&self, follow: Follow) -> watch::Receiver<Announced> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics.entry(follow).or_insert_with(|| watch::channel(Announced::default()).0).subscribe()
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
                        sender.send_if_modified(|announced| announced.raise(w));
                    }
                }
            }
            Signal::Resync => {
                for sender in topics.values() {
                    sender.send_modify(|announced| announced.resyncs += 1);
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
/// suspended mid-transaction for as long as the client did not read.) The reader watches `out` and returns once
/// the consumer has dropped the stream, never in the middle of a read (see `catch_up::run`).
pub(super) fn spawn_reader<T, R>(reader: impl FnOnce(mpsc::Sender<T>) -> R) -> ReceiverStream<T>
where
    T: Send + 'static,
    R: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
    tokio::spawn(reader(tx));
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wakeup(kind: Kind, session: &str, seq: i64) -> Signal {
        Signal::Wakeup(Wakeup { kind, session_id: session.into(), workflow_id: "w".into(), seq })
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_look_sees_only_the_latest_announcement() {
        let live = Live::default();
        let mut session = live.subscribe(Follow::Session("a".into()));
        let mut workflow = live.subscribe(Follow::Workflow("w".into()));
        for seq in 1..=100_000 {
            live.dispatch(wakeup(Kind::Trace, if seq % 2 == 0 { "a" } else { "b" }, seq));
        }
        live.dispatch(wakeup(Kind::Event, "a", 7));
        // An older wake-up (another connection's notification arriving late) moves nothing.
        live.dispatch(wakeup(Kind::Trace, "a", 5));
        assert!(session.has_changed().unwrap_or(false));
        let now = *session.borrow_and_update();
        assert_eq!((now.traces, now.events, now.sessions, now.resyncs), (100_000, 7, 0, 0));
        assert_eq!(workflow.borrow_and_update().traces, 100_000);
        live.dispatch(wakeup(Kind::Trace, "a", 99_998));
        assert!(!session.has_changed().unwrap_or(true), "a wake-up below the announced seq wakes nobody");
        live.dispatch(Signal::Resync);
        assert_eq!(session.borrow_and_update().resyncs, 1);
        assert_eq!(workflow.borrow_and_update().resyncs, 1);
    }

    #[tokio::test]
    async fn a_topic_is_forgotten_when_its_last_subscriber_goes() {
        let live = Live::default();
        let first = live.subscribe(Follow::Session("a".into()));
        let second = live.subscribe(Follow::Session("a".into()));
        drop(first);
        live.dispatch(wakeup(Kind::Trace, "a", 1));
        assert_eq!(live.topics.lock().map(|t| t.len()).unwrap_or(0), 1);
        drop(second);
        live.dispatch(wakeup(Kind::Trace, "a", 2));
        assert_eq!(live.topics.lock().map(|t| t.len()).unwrap_or(1), 0);
    }
}
