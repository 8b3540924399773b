//! How a stream catches up and then stays live: the one loop every live stream runs (backfill, then live).
//!
//! Read what follows the cursor, a page at a time, until a read says there is nothing more; then wait for a wake-up
//! that announces something this stream has not read, a resync (the listener reconnected) or the safety poll; read
//! again. A source moves its cursor only past what it returned, so a
//! missed wake-up delays rows, never loses them; a failed read (the database is down) is retried after a pause.

use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;

use super::{Announced, SAFETY_POLL};
use crate::store::StoreResult;

/// What a live stream reads, and where its cursor is.
pub(super) trait Source: Send + Sync + 'static {
    type Item: Send + 'static;

    /// Reads what follows the cursor and moves the cursor past it. `announced`: what had been announced when it was
    /// woken.
    fn read(&mut self, announced: &Announced) -> impl Future<Output = StoreResult<Batch<Self::Item>>> + Send;

    /// Whether the announcements, having moved from `before` to `now`, tell of something this source has not read.
    fn wants(&self, now: &Announced, before: &Announced) -> bool;
}

pub(super) struct Batch<T> {
    pub items: Vec<T>,
    /// Read again at once: the page was full, or the read may have missed what the wake-up announced.
    pub more: bool,
}

/// The stream of a source's items, first what is stored after its cursor, then what commits later. Ends when the
/// `Live` hub is gone.
pub(super) fn run<S: Source>(mut source: S, mut signals: watch::Receiver<Announced>) -> impl Stream<Item = S::Item> {
    async_stream::stream! {
        let mut seen = *signals.borrow_and_update();
        loop {
            match source.read(&seen).await {
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
            if !wait_for(&mut signals, &mut seen, |now, before| source.wants(now, before)).await {
                break;
            }
        }
    }
}

/// Waits until the announcements move past `seen` in a way `wanted` cares for, a resync is asked for, or the safety
/// poll is due; `seen` becomes the latest announcement. Returns false when the hub is gone.
async fn wait_for(
    rx: &mut watch::Receiver<Announced>,
    seen: &mut Announced,
    wanted: impl Fn(&Announced, &Announced) -> bool,
) -> bool {
    let deadline = tokio::time::sleep(SAFETY_POLL);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return false;
                }
                let now = *rx.borrow_and_update();
                let wake = now.resyncs != seen.resyncs || wanted(&now, seen);
                *seen = now;
                if wake {
                    return true;
                }
            }
            _ = &mut deadline => return true,
        }
    }
}
