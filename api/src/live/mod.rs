//! Live delivery (DESIGN §5). One dedicated LISTEN connection per process turns `pg_notify` wake-ups into in-process
//! signals; every subscription then reads its new rows from the table by cursor. A notification is never the data,
//! so nothing is lost when one is missed: a lagging subscriber, or all of them after the listener reconnects, simply
//! reads again from its cursor.

mod listener;
pub mod ws;

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// How many signals a subscriber may fall behind before it is told it lagged (and re-reads by cursor).
const SIGNAL_BUFFER: usize = 1024;

/// Subscribers re-read at least this often, as a safety net under the notifications.
pub const SAFETY_POLL: Duration = Duration::from_secs(10);

/// What a transaction committed, as sent by `store::ingest::notify`.
#[derive(Clone, Debug, Deserialize)]
pub struct Wakeup {
    #[serde(rename = "k")]
    pub kind: String,
    #[serde(rename = "s")]
    pub session_id: Uuid,
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

/// The in-process fan-out of wake-ups.
#[derive(Clone)]
pub struct Live {
    signals: broadcast::Sender<Signal>,
}

impl Live {
    /// Starts the listener task on its own connection to `database_url`; it ends when `stop` turns true.
    pub fn start(database_url: String, stop: watch::Receiver<bool>) -> Live {
        let (signals, _) = broadcast::channel(SIGNAL_BUFFER);
        tokio::spawn(listener::run(database_url, signals.clone(), stop));
        Live { signals }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.signals.subscribe()
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
