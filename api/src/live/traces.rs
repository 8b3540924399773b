//! The traces stream: a session's or a workflow's traces by `seq`, with reads shared among the subscribers woken by
//! the same commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use entity::trace;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::catch_up::{Batch, Source};
use super::{Announced, PAGE};
use crate::store::live::Follow;
use crate::store::scope::Scope;
use crate::store::{Store, StoreResult};

pub(super) struct Traces {
    store: Store,
    shared: SharedReads,
    follow: Follow,
    /// The `seq` of the last trace delivered.
    cursor: i64,
    /// Read alone next time: a shared read that began before the commit that woke us may lack its rows.
    fresh: bool,
}

impl Traces {
    pub fn new(store: Store, shared: SharedReads, follow: Follow, after: i64) -> Traces {
        Traces { store, shared, follow, cursor: after, fresh: false }
    }
}

impl Source for Traces {
    /// Shared, not copied: the subscribers woken by one commit hold the same rows while they wait to be sent.
    type Item = Arc<trace::Model>;

    async fn read(&mut self, announced: &Announced) -> StoreResult<Batch<Arc<trace::Model>>> {
        let fresh = std::mem::take(&mut self.fresh);
        let rows = if fresh {
            shared_rows(self.store.traces_after(&self.follow, self.cursor, PAGE).await?)
        } else {
            self.shared.read(&self.store, &self.follow, self.cursor, PAGE).await?
        };
        if let Some(last) = rows.last() {
            self.cursor = last.seq;
        }
        let more = if rows.len() as i64 == PAGE {
            metrics::counter!("flowtrace_live_catchup_pages_total").increment(1);
            true
        } else {
            // Joined a read under way that may predate the commit we were woken for: one read of our own settles it.
            self.fresh = self.cursor < announced.traces && !fresh;
            self.fresh
        };
        Ok(Batch { items: rows.iter().cloned().collect(), more })
    }

    fn wants(&self, now: &Announced, before: &Announced) -> bool {
        now.traces > before.traces && now.traces > self.cursor
    }
}

type TraceRead = Shared<BoxFuture<'static, StoreResult<Arc<[Arc<trace::Model>]>>>>;
type ReadKey = (Follow, Option<Scope>, i64, i64);

/// Trace reads in flight by (whose traces, read for whom, cursor, page size). Subscribers of one session are woken by
/// the same commit with the same cursor; they share one query and one decoding of its rows instead of running it
/// each. Only subscribers that may see the same rows share a read.
#[derive(Clone, Default)]
pub(super) struct SharedReads(Arc<Mutex<HashMap<ReadKey, TraceRead>>>);

/// Takes a finished (or abandoned) read out of the table, so the next wake-up starts a fresh one.
struct Done<'a>(&'a SharedReads, ReadKey, TraceRead);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let mut reads = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if reads.get(&self.1).is_some_and(|r| r.ptr_eq(&self.2)) {
            reads.remove(&self.1);
        }
    }
}

impl SharedReads {
    /// `Store::traces_after`, shared with every caller asking for the same rows at the same time. A caller that
    /// joins a read already under way may get rows committed before its own wake-up only (see `Traces::fresh`).
    async fn read(
        &self,
        store: &Store,
        follow: &Follow,
        after: i64,
        limit: i64,
    ) -> StoreResult<Arc<[Arc<trace::Model>]>> {
        let key = (follow.clone(), store.scope().cloned(), after, limit);
        let read = {
            let mut reads = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let read = reads.entry(key.clone()).or_insert_with(|| {
                let (store, follow) = (store.clone(), follow.clone());
                async move { store.traces_after(&follow, after, limit).await.map(shared_rows) }.boxed().shared()
            });
            read.clone()
        };
        let _done = Done(self, key, read.clone());
        read.await
    }
}

fn shared_rows(rows: Vec<trace::Model>) -> Arc<[Arc<trace::Model>]> {
    rows.into_iter().map(Arc::new).collect()
}
