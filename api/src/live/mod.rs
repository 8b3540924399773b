//! Live delivery (DESIGN §5). One dedicated LISTEN connection per process turns `pg_notify` wake-ups into in-process
//! signals; every subscription then reads its new rows from the table by cursor. A notification is never the data,
//! so nothing is lost when one is missed: a lagging subscriber, or all of them after the listener reconnects, simply
//! reads again from its cursor.

mod listener;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// How many signals a subscriber may fall behind before it is told it lagged (and re-reads by cursor).
const SIGNAL_BUFFER: usize = 1024;

/// Items a subscription reads ahead of its socket: the bounded buffer between its reader and the socket writer.
pub const SUBSCRIBER_BUFFER: usize = 256;

/// Subscribers re-read at least this often, as a safety net under the notifications.
pub const SAFETY_POLL: Duration = Duration::from_secs(10);

/// What a transaction committed, as sent by `store::ingest::notify`.
#[derive(Clone, Debug, Deserialize)]
pub struct Wakeup {
    #[serde(rename = "k")]
    pub kind: String,
    #[serde(rename = "s")]
    pub session_id: String,
    #[serde(rename = "w")]
    pub workflow_id: String,
    #[serde(rename = "q")]
    pub seq: i64,
}

#[derive(Clone, Debug)]
pub enum Signal {
    Wakeup(Wakeup),
    /// Notifications may have been missed (listener reconnected): everyone re-reads by cursor.
    Resync,
}

/// What a subscriber listens to. Wake-ups go only to the topics they concern, so a commit wakes the subscribers of its
/// session and workflow, not every subscriber of the process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    Session(String),
    Workflow(String),
    /// Every wake-up (sessionUpdates without a workflow).
    All,
}

/// The in-process fan-out of wake-ups: one bounded broadcast channel per topic that has subscribers.
#[derive(Clone, Default)]
pub struct Live {
    topics: Arc<Mutex<HashMap<Topic, broadcast::Sender<Signal>>>>,
}

impl Live {
    /// Starts the listener task on its own connection to `database_url`; it ends when `stop` turns true.
    pub fn start(database_url: String, stop: watch::Receiver<bool>) -> Live {
        let live = Live::default();
        tokio::spawn(listener::run(database_url, live.clone(), stop));
        live
    }

    pub fn subscribe(&self, topic: Topic) -> broadcast::Receiver<Signal> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics.entry(topic).or_insert_with(|| broadcast::channel(SIGNAL_BUFFER).0).subscribe()
    }

    /// Passes a signal to the topics it concerns (a resync to all), and forgets topics nobody listens to any more.
    fn dispatch(&self, signal: Signal) {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics.retain(|_, sender| sender.receiver_count() > 0);
        match &signal {
            Signal::Wakeup(w) => {
                for topic in [Topic::Session(w.session_id.clone()), Topic::Workflow(w.workflow_id.clone()), Topic::All]
                {
                    if let Some(sender) = topics.get(&topic) {
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

/// Waits until a signal passes `relevant`, the receiver lagged or was told to resync, or the safety poll is due.
/// Returns the `seq` the relevant commit reached (0 when woken for another reason: read whatever is there), or `None`
/// when the hub is gone.
pub async fn wait_for(rx: &mut broadcast::Receiver<Signal>, relevant: impl Fn(&Wakeup) -> bool) -> Option<i64> {
    let deadline = tokio::time::sleep(SAFETY_POLL);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            signal = rx.recv() => match signal {
                Ok(Signal::Wakeup(w)) if relevant(&w) => return Some(w.seq),
                Ok(Signal::Wakeup(_)) => continue,
                Ok(Signal::Resync) => return Some(0),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    metrics::counter!("flowtrace_live_lagged_total").increment(1);
                    return Some(0);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = &mut deadline => return Some(0),
        }
    }
}

/// Runs a subscription's reader on its own task, feeding a bounded buffer that the socket writer drains.
///
/// The reader is polled whatever the socket does, so a database read, once begun, always runs to completion and
/// releases its live-read slot and pooled connection: a reader only ever waits at a full buffer, holding nothing but
/// the rows it read. (Polled from the socket's task instead, a read that began just before a write blocked stayed
/// suspended mid-transaction for as long as the client did not read.) The task ends when the subscription does.
pub fn detach<T: Send + 'static>(stream: impl Stream<Item = T> + Send + 'static) -> ReceiverStream<T> {
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
