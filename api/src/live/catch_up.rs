//! How a stream catches up and then stays live: the one loop every live stream runs (backfill, then live).
//!
//! Read what follows the cursor, a page at a time, until a read says there is nothing more; then wait for a wake-up
//! that announces something this stream has not read, a resync (the listener reconnected, or this stream fell
//! behind the wake-ups) or the safety poll; read again. A source moves its cursor only past what it returned, so a
//! missed wake-up delays rows, never loses them; a failed read (the database is down) is retried after a pause.

use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;

use super::{SAFETY_POLL, Signal};
use crate::store::StoreResult;
use crate::store::notify::Wakeup;

/// What a live stream reads, and where its cursor is.
pub(super) trait Source: Send + Sync + 'static {
    type Item: Send + 'static;

    /// Reads what follows the cursor and moves the cursor past it. `woken_for` is the `seq` the latest relevant
    /// wake-up announced (0 when woken for another reason).
    fn read(&mut self, woken_for: i64) -> impl Future<Output = StoreResult<Batch<Self::Item>>> + Send;

    /// Whether a wake-up announces something this source has not read.
    fn wants(&self, wakeup: &Wakeup) -> bool;
}

pub(super) struct Batch<T> {
    pub items: Vec<T>,
    /// Read again at once: the page was full, or the read may have missed what the wake-up announced.
    pub more: bool,
}

/// The stream of a source's items, first what is stored after its cursor, then what commits later. Ends when the
/// `Live` hub is gone.
pub(super) fn run<S: Source>(mut source: S, mut signals: broadcast::Receiver<Signal>) -> impl Stream<Item = S::Item> {
    async_stream::stream! {
        let mut woken_for = 0;
        loop {
            match source.read(woken_for).await {
                Ok(batch) => {
                    for item in batch.items {
                        yield item;
                    }
                    if batch.more {
                        continue;
                    }
                }
                Err(err) => {
                    // The database is unreachable: wait and read again instead of ending the stream.
                    tracing::debug!(%err, "live read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            match wait_for(&mut signals, |w| source.wants(w)).await {
                Some(seq) => woken_for = seq,
                None => break,
            }
        }
    }
}

/// Waits until a signal passes `wanted`, the receiver lagged or was told to resync, or the safety poll is due.
/// Returns the `seq` the wanted wake-up announced (0 when woken for another reason: read whatever is there), or
/// `None` when the hub is gone.
async fn wait_for(rx: &mut broadcast::Receiver<Signal>, wanted: impl Fn(&Wakeup) -> bool) -> Option<i64> {
    let deadline = tokio::time::sleep(SAFETY_POLL);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            signal = rx.recv() => match signal {
                Ok(Signal::Wakeup(w)) if wanted(&w) => return Some(w.seq),
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
