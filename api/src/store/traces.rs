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
    pub search: TraceSearch,
}

/// Narrower filters for dashboards' searches. A query always has a session or workflow, so its rows come from the
/// session or workflow index (`…, timestamp, seq`) and these are checked on those rows: no index of their own.
#[derive(Clone, Debug, Default)]
pub struct TraceSearch {
    /// Any of these statuses (empty: any).
    pub statuses: Vec<TraceStatus>,
    /// Inclusive bounds on `duration` in milliseconds; a trace without a duration matches neither.
    pub min_duration: Option<f64>,
    pub max_duration: Option<f64>,
    pub error_code: Option<String>,
    pub graph_id: Option<String>,
    /// The traces of the subgraph this trace started (its direct children).
    pub parent_trace_id: Option<String>,
    pub depth: Option<i32>,
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
        let s = &self.search;
        check_durations(s.min_duration, s.max_duration)?;
        if s.depth.is_some_and(|d| d < 0) {
            return Err(StoreError::BadInput("depth must be >= 0".into()));
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
        let s = &self.search;
        if !s.statuses.is_empty() {
            let p = sql.bind(s.statuses.iter().map(|v| v.as_str().to_owned()).collect::<Vec<String>>());
            sql.push(&format!(" AND status = ANY({p})"));
        }
        if let Some(v) = s.min_duration {
            let p = sql.bind(v);
            sql.push(&format!(" AND duration >= {p}"));
        }
        if let Some(v) = s.max_duration {
            let p = sql.bind(v);
            sql.push(&format!(" AND duration <= {p}"));
        }
        for (column, value) in
            [("error_code", &s.error_code), ("graph_id", &s.graph_id), ("parent_trace_id", &s.parent_trace_id)]
        {
            if let Some(v) = value {
                let p = sql.bind(v.clone());
                sql.push(&format!(" AND {column} = {p}"));
            }
        }
        if let Some(v) = s.depth {
            let p = sql.bind(v);
            sql.push(&format!(" AND depth = {p}"));
        }
    }
}

/// BAD_USER_INPUT unless `[min, max]` is a range of milliseconds (either end open).
pub fn check_durations(min: Option<f64>, max: Option<f64>) -> StoreResult<()> {
    for (name, v) in [("minDuration", min), ("maxDuration", max)] {
        if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(StoreError::BadInput(format!("{name} must be a finite number of milliseconds >= 0")));
        }
    }
    match (min, max) {
        (Some(min), Some(max)) if min > max => {
            Err(StoreError::BadInput(format!("minDuration ({min}) is above maxDuration ({max})")))
        }
        _ => Ok(()),
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
