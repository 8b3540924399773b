//! Replay: a session's stored traces in a time range, played back with their recorded spacing divided by `speed`,
//! then the end. Not live: the range is read page by page as it plays.

use chrono::{DateTime, Utc};
use entity::trace;
use futures::Stream;

use super::{PAGE, spawn_reader};
use crate::store::cursor::{Page, SeqKey, TraceKey};
use crate::store::traces::TraceFilter;
use crate::store::{Store, StoreResult};

/// The traces `filter` selects, in time order, each after the gap that preceded it divided by `speed` (> 0). A failed
/// read ends the stream with the error.
pub fn replay(store: Store, filter: TraceFilter, speed: f64) -> impl Stream<Item = StoreResult<trace::Model>> {
    spawn_reader(move |out| async move {
        let mut page = Page::<TraceKey> { after: None, before: None, limit: PAGE as u64, from_end: false };
        let mut previous: Option<DateTime<Utc>> = None;
        loop {
            let rows = match store.traces(&filter, &page).await {
                Ok(rows) => rows,
                Err(err) => {
                    let _ = out.send(Err(err)).await;
                    return;
                }
            };
            for row in rows.rows {
                if let Some(prev) = previous {
                    let gap = (row.timestamp - prev).to_std().unwrap_or_default();
                    tokio::select! {
                        _ = tokio::time::sleep(gap.div_f64(speed)) => {}
                        _ = out.closed() => return,
                    }
                }
                previous = Some(row.timestamp);
                page.after = Some(TraceKey(SeqKey { at: row.timestamp, seq: row.seq }));
                if out.send(Ok(row)).await.is_err() {
                    return;
                }
            }
            if !rows.has_next {
                return;
            }
        }
    })
}
