//! How a stream catches up and then stays live: the one loop every live stream runs (backfill, then live).
//!
//! Read what follows the cursor, a page at a time, until a read says there is nothing more; then wait for a wake-up
//! that announces something this stream has not read, a resync (the listener reconnected) or the safety poll; read
//! again. A source moves its cursor only past what it returned, so a missed wake-up delays rows, never loses them; a
//! failed read (the database is down) is retried after a pause.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

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

/// Sends a source's items to `out`, first what is stored after its cursor, then what commits later. Returns when the
/// consumer has gone or the `Live` hub is gone.
///
/// A read, once begun, always runs to its end, even when the consumer leaves meanwhile: abandoned halfway, a read
/// could hand its connection back to the pool still inside its transaction (and would keep its live-read slot until
/// it was dropped). Waits, for a wake-up or for the send buffer, end as soon as the consumer goes.
pub(super) async fn run<S: Source>(mut source: S, mut signals: watch::Receiver<Announced>, out: mpsc::Sender<S::Item>) {
    let mut seen = *signals.borrow_and_update();
    loop {
        match source.read(&seen).await {
            Ok(batch) => {
                for item in batch.items {
                    if out.send(item).await.is_err() {
                        return;
                    }
                }
                if batch.more {
                    continue;
                }
            }
            Err(err) => {
                // The database is unreachable: wait and read again instead of ending the stream.
                tracing::debug!(%err, "live read failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = out.closed() => return,
                }
            }
        }
        tokio::select! {
            woken = wait_for(&mut signals, &mut seen, |now, before| source.wants(now, before)) => if !woken {
                return;
            },
            _ = out.closed() => return,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::StreamExt;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::live::spawn_reader;

    /// Reads one item per call, slowly; counts the reads begun and finished, and says when it is dropped.
    struct Slow {
        begun: Arc<AtomicUsize>,
        finished: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    impl Source for Slow {
        type Item = usize;

        async fn read(&mut self, _: &Announced) -> StoreResult<Batch<usize>> {
            let n = self.begun.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(Batch { items: vec![n], more: n == 0 })
        }

        fn wants(&self, _: &Announced, _: &Announced) -> bool {
            true
        }
    }

    impl Drop for Slow {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    /// A reader of a `Slow` source whose first item has been received: its stream, the hub's end of its signals (kept
    /// so the hub is not gone), and the source's counters.
    struct Started {
        stream: ReceiverStream<usize>,
        _hub: watch::Sender<Announced>,
        begun: Arc<AtomicUsize>,
        finished: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    async fn start() -> Started {
        let (begun, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let dropped = Arc::new(AtomicBool::new(false));
        let source = Slow { begun: begun.clone(), finished: finished.clone(), dropped: dropped.clone() };
        let (hub, signals) = watch::channel(Announced::default());
        let mut stream = spawn_reader(|out| run(source, signals, out));
        assert_eq!(stream.next().await, Some(0));
        Started { stream, _hub: hub, begun, finished, dropped }
    }

    #[tokio::test]
    async fn a_read_under_way_when_the_consumer_leaves_runs_to_its_end() {
        let Started { stream, _hub, begun, finished, dropped } = start().await;
        // The second read (the first said there is more) is under way when the consumer goes.
        while begun.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(stream);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(begun.load(Ordering::SeqCst), 2);
        assert_eq!(finished.load(Ordering::SeqCst), 2, "the read was finished, not abandoned halfway");
        assert!(dropped.load(Ordering::SeqCst), "and then the reader ended");
    }

    #[tokio::test]
    async fn a_reader_waiting_for_a_wake_up_ends_as_soon_as_its_consumer_leaves() {
        let Started { mut stream, _hub, finished, dropped, .. } = start().await;
        assert_eq!(stream.next().await, Some(1));
        // Caught up: now it waits for a wake-up (or the safety poll, seconds away).
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(stream);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(dropped.load(Ordering::SeqCst), "the reader ended without waiting for the next wake-up");
        assert_eq!(finished.load(Ordering::SeqCst), 2);
    }
}
