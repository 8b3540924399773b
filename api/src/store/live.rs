//! Reads for live subscriptions: rows after a `seq` cursor, in commit order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use entity::{event, trace};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::events::EVENT_COLUMNS;
use super::traces::TRACE_COLUMNS;
use super::{Sql, Store, StoreError, StoreResult};
use crate::domain::{EventType, SessionStatus};

/// Whose traces a subscription follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Follow {
    Session(String),
    Workflow(String),
}

type TraceRead = Shared<BoxFuture<'static, StoreResult<Arc<[trace::Model]>>>>;
type ReadKey = (Follow, i64, i64);

/// Trace reads in flight by (whose traces, cursor, page size). Subscribers of one session are woken by the same
/// commit with the same cursor; they share one query and one decoding of its rows instead of running it each.
#[derive(Clone, Default)]
pub struct SharedReads(Arc<Mutex<HashMap<ReadKey, TraceRead>>>);

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

impl Store {
    /// `traces_after`, shared with every caller asking for the same rows at the same time. A caller that joins a read
    /// already under way may get rows committed before its own wake-up only: it reads again while its cursor is behind
    /// the `seq` it was woken for.
    pub async fn traces_after_shared(
        &self,
        follow: &Follow,
        after: i64,
        limit: i64,
    ) -> StoreResult<Arc<[trace::Model]>> {
        let key = (follow.clone(), after, limit);
        let read = {
            let mut reads = self.shared_reads.0.lock().unwrap_or_else(|e| e.into_inner());
            let read = reads.entry(key.clone()).or_insert_with(|| {
                let (store, follow) = (self.clone(), follow.clone());
                async move { store.traces_after(&follow, after, limit).await.map(Arc::from) }.boxed().shared()
            });
            read.clone()
        };
        let _done = Done(&self.shared_reads, key, read.clone());
        read.await
    }

    /// Up to `limit` traces with `seq > after`, by seq. Uses flow_traces_session_seq_idx / flow_traces_workflow_seq_idx.
    pub async fn traces_after(&self, follow: &Follow, after: i64, limit: i64) -> StoreResult<Vec<trace::Model>> {
        let mut sql = Sql::new(&format!("SELECT {TRACE_COLUMNS} FROM flow_traces WHERE "));
        let key = match follow {
            Follow::Session(id) => format!("session_id = {}", sql.bind(id.clone())),
            Follow::Workflow(id) => format!("workflow_id = {}", sql.bind(id.clone())),
        };
        let (after, limit) = (sql.bind(after), sql.bind(limit));
        sql.push(&format!("{key} AND seq > {after} ORDER BY seq LIMIT {limit}"));
        let _permit = self.live_reads.acquire().await.map_err(|_| StoreError::Unavailable("shutting down".into()))?;
        metrics::counter!("flowtrace_live_reads_total", "kind" => "traces").increment(1);
        self.all_serial(sql).await
    }

    /// The newest committed trace `seq` of a workflow: where a live-only subscription starts.
    pub async fn latest_trace_seq(&self, workflow_id: &str) -> StoreResult<i64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM flow_traces WHERE workflow_id = $1")
            .bind(workflow_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Up to `limit` events of a session with `seq > after`, by seq. Uses flow_trace_events_session_seq_idx.
    pub async fn events_after(
        &self,
        session_id: &str,
        types: &[EventType],
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<event::Model>> {
        let mut sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM flow_trace_events WHERE session_id = "));
        let p = sql.bind(session_id);
        sql.push(&p);
        if !types.is_empty() {
            let p = sql.bind(types.iter().map(|t| t.as_str().to_owned()).collect::<Vec<_>>());
            sql.push(&format!(" AND event_type = ANY({p})"));
        }
        let (after, limit) = (sql.bind(after), sql.bind(limit));
        sql.push(&format!(" AND seq > {after} ORDER BY seq LIMIT {limit}"));
        let _permit = self.live_reads.acquire().await.map_err(|_| StoreError::Unavailable("shutting down".into()))?;
        self.all_serial(sql).await
    }

    /// Where a `sessionUpdates` subscriber starts: the current snapshot, as text.
    pub async fn change_mark(&self) -> StoreResult<String> {
        Ok(sqlx::query_scalar("SELECT pg_current_snapshot()::text").fetch_one(&self.pool).await?)
    }

    /// Session starts and ends committed after `mark` (a snapshot from `change_mark` or from here), of one workflow or
    /// all, by `seq`; and the snapshot they were read in, which is the next mark. Exactly the changes that `mark` did
    /// not see and this read does: uses flow_session_changes_xid_idx (every transaction `mark` did not see has an id
    /// at or above its xmin).
    pub async fn session_changes_since(
        &self,
        mark: &str,
        workflow_id: Option<&str>,
    ) -> StoreResult<(Vec<SessionChange>, String)> {
        /// The snapshot, then the change (all null when there is none).
        type ChangeRow = (String, Option<i64>, Option<String>, Option<String>);
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "WITH changes AS (
                SELECT seq, session_id, status FROM flow_session_changes
                WHERE xid >= pg_snapshot_xmin($1::pg_snapshot) AND NOT pg_visible_in_snapshot(xid, $1::pg_snapshot)
                    AND ($2::text IS NULL OR workflow_id = $2)
             )
             SELECT pg_current_snapshot()::text, changes.seq, changes.session_id, changes.status
             FROM (SELECT 1) one LEFT JOIN changes ON true ORDER BY changes.seq",
        )
        .bind(mark)
        .bind(workflow_id)
        .fetch_all(&self.pool)
        .await?;
        let next = rows.first().map(|r| r.0.clone()).unwrap_or_else(|| mark.to_owned());
        let changes = rows
            .into_iter()
            .filter_map(|(_, seq, session_id, status)| {
                Some(SessionChange {
                    seq: seq?,
                    session_id: session_id?,
                    status: status.and_then(|s| SessionStatus::parse(&s)),
                })
            })
            .collect();
        Ok((changes, next))
    }
}

/// One session start or end, as `flow_session_changes` holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionChange {
    pub seq: i64,
    pub session_id: String,
    /// What the session became (`Running` for a start); `None` for changes logged before the status was recorded.
    pub status: Option<SessionStatus>,
}
