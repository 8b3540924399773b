//! Reads for live delivery: rows after a cursor, in commit order, of whoever a subscriber follows. `crate::live`
//! decides when to read; this module only reads.

use entity::{event, trace};

use super::events::EVENT_COLUMNS;
use super::traces::TRACE_COLUMNS;
use super::{Sql, Store, StoreError, StoreResult};
use crate::domain::{EventType, SessionStatus};

/// Whose rows a subscriber follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Follow {
    Session(String),
    Workflow(String),
    /// Every workflow's (session changes only: trace and event `seq` are ordered within a workflow).
    All,
}

impl Store {
    /// Up to `limit` traces with `seq > after`, by seq. Uses flow_traces_session_seq_idx / flow_traces_workflow_seq_idx.
    pub async fn traces_after(&self, follow: &Follow, after: i64, limit: i64) -> StoreResult<Vec<trace::Model>> {
        let mut sql = Sql::new(&format!("SELECT {TRACE_COLUMNS} FROM flow_traces WHERE "));
        let key = match follow {
            Follow::Session(id) => format!("session_id = {}", sql.bind(id.clone())),
            Follow::Workflow(id) => format!("workflow_id = {}", sql.bind(id.clone())),
            Follow::All => return Err(StoreError::BadInput("follow the traces of a session or a workflow".into())),
        };
        let (after, limit) = (sql.bind(after), sql.bind(limit));
        sql.push(&format!("{key} AND seq > {after} ORDER BY seq LIMIT {limit}"));
        let _permit = self.live_reads.acquire().await.map_err(|_| StoreError::Unavailable("shutting down".into()))?;
        metrics::counter!("flowtrace_live_reads_total", "kind" => "traces").increment(1);
        self.all_serial(sql).await
    }

    /// The newest committed trace `seq` of a workflow: where a live-only subscription starts.
    pub async fn latest_trace_seq(&self, workflow_id: &str) -> StoreResult<i64> {
        let mut tx = self.read_tx().await?;
        let seq: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM flow_traces WHERE workflow_id = $1")
            .bind(workflow_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
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

    /// Session starts and ends committed after `mark` (a snapshot from `change_mark` or from here), of whoever
    /// `follow` names, by `seq`; and the snapshot they were read in, which is the next mark. Exactly the changes that `mark` did
    /// not see and this read does: uses flow_session_changes_xid_idx (every transaction `mark` did not see has an id
    /// at or above its xmin).
    pub async fn session_changes_since(
        &self,
        mark: &str,
        follow: &Follow,
    ) -> StoreResult<(Vec<SessionChange>, String)> {
        /// The snapshot, then the change (all null when there is none).
        type ChangeRow = (String, Option<i64>, Option<String>, Option<SessionStatus>);
        let mut tx = self.read_tx().await?;
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "WITH changes AS (
                SELECT seq, session_id, status FROM flow_session_changes
                WHERE xid >= pg_snapshot_xmin($1::pg_snapshot) AND NOT pg_visible_in_snapshot(xid, $1::pg_snapshot)
                    AND ($2::text IS NULL OR session_id = $2) AND ($3::text IS NULL OR workflow_id = $3)
             )
             SELECT pg_current_snapshot()::text, changes.seq, changes.session_id, changes.status
             FROM (SELECT 1) one LEFT JOIN changes ON true ORDER BY changes.seq",
        )
        .bind(mark)
        .bind(match follow {
            Follow::Session(id) => Some(id),
            _ => None,
        })
        .bind(match follow {
            Follow::Workflow(id) => Some(id),
            _ => None,
        })
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let next = rows.first().map(|r| r.0.clone()).unwrap_or_else(|| mark.to_owned());
        let changes = rows
            .into_iter()
            .filter_map(|(_, seq, session_id, status)| {
                Some(SessionChange { seq: seq?, session_id: session_id?, status })
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
