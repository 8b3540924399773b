//! Reads for live subscriptions: rows after a `seq` cursor, in commit order.

use entity::{event, trace};
use uuid::Uuid;

use super::events::EVENT_COLUMNS;
use super::traces::TRACE_COLUMNS;
use super::{Sql, Store, StoreError, StoreResult};
use crate::domain::EventType;

/// Whose traces a subscription follows.
#[derive(Clone, Debug)]
pub enum Follow {
    Session(Uuid),
    Workflow(String),
}

impl Store {
    /// Up to `limit` traces with `seq > after`, by seq. Uses flow_traces_session_seq_idx / flow_traces_workflow_seq_idx.
    pub async fn traces_after(&self, follow: &Follow, after: i64, limit: i64) -> StoreResult<Vec<trace::Model>> {
        let mut sql = Sql::new(&format!("SELECT {TRACE_COLUMNS} FROM flow_traces WHERE "));
        let key = match follow {
            Follow::Session(id) => format!("session_id = {}", sql.bind(*id)),
            Follow::Workflow(id) => format!("workflow_id = {}", sql.bind(id.clone())),
        };
        let (after, limit) = (sql.bind(after), sql.bind(limit));
        sql.push(&format!("{key} AND seq > {after} ORDER BY seq LIMIT {limit}"));
        let _permit = self.live_reads.acquire().await.map_err(|_| StoreError::Unavailable("shutting down".into()))?;
        self.all(sql).await
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
        session_id: Uuid,
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
        self.all(sql).await
    }
}
