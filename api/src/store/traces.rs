//! Reading traces: by session or workflow, in `(timestamp, seq)` order.

use chrono::{DateTime, Utc};
use entity::trace;

use super::cursor::{Page, PageOf, TraceKey, finish, keyset};
use super::{Sql, Store, StoreError, StoreResult};
use crate::domain::TraceStatus;

#[derive(Clone, Debug, Default)]
pub struct TraceFilter {
    pub session_id: Option<String>,
    pub workflow_id: Option<String>,
    /// Inclusive bounds on `timestamp`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Traces whose source or target is this node.
    pub node_id: Option<String>,
    pub status: Option<TraceStatus>,
}

pub const TRACE_COLUMNS: &str = "id, timestamp, seq, session_id, workflow_id, duration, status,
    source_node_id, source_node_name, source_node_type, source_port_id, source_port_name, source_port_type,
    target_node_id, target_node_name, target_node_type, target_port_id, target_port_name, target_port_type,
    data_payload, data_size, data_type, data_preview, error_message, error_code, error_stack,
    graph_id, graph_name, parent_trace_id, depth";

impl TraceFilter {
    pub fn validate(&self) -> StoreResult<()> {
        if self.session_id.is_none() && self.workflow_id.is_none() {
            return Err(StoreError::BadInput("give sessionId or workflowId".into()));
        }
        check_range(self.from, self.to)
    }

    fn push(&self, sql: &mut Sql) {
        if let Some(v) = &self.session_id {
            let p = sql.bind(v.clone());
            sql.push(&format!(" AND session_id = {p}"));
        }
        if let Some(v) = &self.workflow_id {
            let p = sql.bind(v.clone());
            sql.push(&format!(" AND workflow_id = {p}"));
        }
        if let Some(v) = self.from {
            let p = sql.bind(v);
            sql.push(&format!(" AND timestamp >= {p}"));
        }
        if let Some(v) = self.to {
            let p = sql.bind(v);
            sql.push(&format!(" AND timestamp <= {p}"));
        }
        if let Some(v) = &self.node_id {
            let p = sql.bind(v.clone());
            sql.push(&format!(" AND (source_node_id = {p} OR target_node_id = {p})"));
        }
        if let Some(v) = self.status {
            let p = sql.bind(v.as_str());
            sql.push(&format!(" AND status = {p}"));
        }
    }
}

pub fn check_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> StoreResult<()> {
    match (from, to) {
        (Some(f), Some(t)) if f > t => {
            Err(StoreError::BadInput(format!("from ({}) is after to ({})", f.to_rfc3339(), t.to_rfc3339())))
        }
        _ => Ok(()),
    }
}

impl Store {
    /// Oldest first. Uses flow_traces_session_idx / flow_traces_workflow_idx (`…, timestamp, seq`).
    pub async fn traces(&self, filter: &TraceFilter, page: &Page<TraceKey>) -> StoreResult<PageOf<trace::Model>> {
        filter.validate()?;
        let mut sql = Sql::new(&format!("SELECT {TRACE_COLUMNS} FROM flow_traces WHERE TRUE"));
        filter.push(&mut sql);
        keyset(&mut sql, ("timestamp", "seq"), page, false);
        Ok(finish(self.all(sql).await?, page))
    }

    pub async fn count_traces(&self, filter: &TraceFilter) -> StoreResult<i64> {
        filter.validate()?;
        let mut sql = Sql::new("SELECT count(*) AS n FROM flow_traces WHERE TRUE");
        filter.push(&mut sql);
        self.count(sql).await
    }

    pub(crate) async fn count(&self, sql: Sql) -> StoreResult<i64> {
        #[derive(sqlx::FromRow)]
        struct Count {
            n: i64,
        }
        let rows: Vec<Count> = self.all(sql).await?;
        Ok(rows.first().map_or(0, |c| c.n))
    }
}
