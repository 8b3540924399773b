//! The HTTP streams' hold on a client that stops reading (SSE, multipart): their results move through a small queue
//! from a task of their own, and when the client has not taken one for ws_send_timeout_secs the operation and its
//! connection permit are given up, as a WebSocket that does not read is closed. The body then ends with what it
//! holds, without the end an operation that finished gets.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Results queued for a client that reads slower than its operation produces.
const QUEUED: usize = 16;

/// `results`, then `end` once they are all out.
pub fn paced<T: Send + 'static>(
    mut results: BoxStream<'static, T>,
    end: T,
    send_timeout: Duration,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = T> + Send + 'static {
    let (queue, taken) = mpsc::channel(QUEUED);
    let mut end = Some(end);
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            let result = tokio::select! {
                result = results.next() => result,
                // The client left while the operation had nothing to send.
                _ = queue.closed() => return,
            };
            let (result, last) = match (result, end.take()) {
                (Some(result), end_later) => {
                    end = end_later;
                    (result, false)
                }
                (None, Some(end)) => (end, true),
                (None, None) => return,
            };
            match queue.send_timeout(result, send_timeout).await {
                Ok(()) if last => return,
                Ok(()) => {}
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    metrics::counter!("flowtrace_http_stream_too_slow_total").increment(1);
                    tracing::debug!("ending an HTTP stream whose client did not read for {send_timeout:?}");
                    return;
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return,
            }
        }
    });
    ReceiverStream::new(taken)
}
