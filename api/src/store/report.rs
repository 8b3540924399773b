//! A run report of one session: its slowest traces, its errors grouped by code and by node, and each node's timing
//! (the bars of a Gantt chart). Every part reads the session's traces through flow_traces_session_idx
//! (session_id, timestamp, seq); the totals are the session's summary, which ingestion keeps.

use chrono::{DateTime, Utc};
use entity::{session, trace};

use super::traces::TRACE_COLUMNS;
use super::{Sql, Store, StoreError, StoreResult};

/// The most slowest traces a report lists.
pub const MAX_SLOWEST: i64 = 100;

/// Failed traces sharing a code, or an emitting node.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ErrorGroup {
    pub key: Option<String>,
    pub count: i64,
    /// The message of the first of them, in commit order.
    pub sample_message: Option<String>,
}

/// One node's part in a run.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct NodeTiming {
    pub node_id: String,
    pub first_input: Option<DateTime<Utc>>,
    pub last_output: Option<DateTime<Utc>>,
    pub inputs: i64,
    pub outputs: i64,
    /// Sum of the durations of the traces it emitted, in milliseconds.
    pub busy_ms: f64,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub session: session::Model,
    pub slowest: Vec<trace::Model>,
    pub errors_by_code: Vec<ErrorGroup>,
    pub errors_by_node: Vec<ErrorGroup>,
    pub nodes: Vec<NodeTiming>,
}

/// Failed traces matching `scope` (a condition on flow_traces), grouped by the column `key`, most frequent first.
pub(super) fn push_error_groups(sql: &mut Sql, key: &str, scope: &str) {
    sql.push(&format!(
        "SELECT {key} AS key, count(*) AS count, (array_agg(error_message ORDER BY seq))[1] AS sample_message
         FROM flow_traces WHERE {scope} AND status = 'ERROR'
         GROUP BY {key} ORDER BY count(*) DESC, {key} NULLS LAST"
    ));
}

impl Store {
    /// The report of an existing session (NOT_FOUND otherwise), with its `slowest` longest traces.
    pub async fn session_report(&self, session_id: &str, slowest: i64) -> StoreResult<Report> {
        if !(1..=MAX_SLOWEST).contains(&slowest) {
            return Err(StoreError::BadInput(format!("slowest must be 1 to {MAX_SLOWEST}, got {slowest}")));
        }
        let session = self
            .session(session_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("session {session_id} does not exist")))?;
        let mut sql = Sql::new(&format!("SELECT {TRACE_COLUMNS} FROM flow_traces WHERE session_id = "));
        let (s, n) = (sql.bind(session_id.to_owned()), sql.bind(slowest));
        sql.push(&format!("{s} AND duration IS NOT NULL ORDER BY duration DESC, seq LIMIT {n}"));
        let slowest = self.all(sql).await?;

        let errors = |key: &str| {
            let mut sql = Sql::new("");
            let s = sql.bind(session_id.to_owned());
            push_error_groups(&mut sql, key, &format!("session_id = {s}"));
            sql
        };
        let errors_by_code = self.all(errors("error_code")).await?;
        // The node that emitted a failed trace is the one that failed (NodeStatus rule 2).
        let errors_by_node = self.all(errors("source_node_id")).await?;

        let mut sql = Sql::new("");
        let s = sql.bind(session_id.to_owned());
        sql.push(&format!(
            "SELECT node AS node_id, min(received) AS first_input, max(emitted) AS last_output,
                count(received) AS inputs, count(emitted) AS outputs, COALESCE(sum(busy), 0)::float8 AS busy_ms
             FROM (
                SELECT target_node_id AS node, timestamp AS received, NULL::timestamptz AS emitted, NULL::float8 AS busy
                FROM flow_traces WHERE session_id = {s}
                UNION ALL
                SELECT source_node_id, NULL, timestamp, duration FROM flow_traces WHERE session_id = {s}
             ) t GROUP BY node ORDER BY min(COALESCE(received, emitted)), node"
        ));
        let nodes = self.all(sql).await?;
        Ok(Report { session, slowest, errors_by_code, errors_by_node, nodes })
    }
}
