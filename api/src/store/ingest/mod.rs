//! Writes of traces and events in bulk: `checks` (what a batch must satisfy), `traces` and `events` (the SQL that
//! stores each), and what both share here.
//!
//! A batch is validated whole before anything is written, then stored by one INSERT over UNNEST-ed arrays in one
//! transaction with its summary updates and one wake-up (`store::notify`): all or nothing. Ids are the idempotency
//! keys: an id already stored in the session is skipped whatever its timestamp and reported as a duplicate, so a
//! retried batch stores nothing twice. The ids a session already holds are found by one probe of the primary key for
//! the whole batch; the per-workflow lock below makes the answer hold until commit.
//!
//! Ordering: the transaction takes an advisory lock on the session's workflow before it draws `seq` values, so within
//! a workflow (and so within a session) `seq` order is commit order and a reader following `seq` never skips a row
//! that commits late.

mod checks;
mod events;
mod traces;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{Postgres, Transaction};

use super::{Store, StoreError, StoreResult};
use crate::domain::{EventType, TraceStatus};

pub(crate) use checks::{check_name, check_time, json_depth};

#[derive(Clone, Debug, Default)]
pub struct NodeRef {
    pub node_id: String,
    pub node_name: Option<String>,
    pub node_type: Option<String>,
    pub port_id: Option<String>,
    pub port_name: Option<String>,
    pub port_type: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NewTrace {
    pub id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub duration: Option<f64>,
    pub status: TraceStatus,
    pub source: NodeRef,
    pub target: NodeRef,
    pub payload: Option<Json>,
    pub size: Option<i64>,
    pub data_type: Option<String>,
    pub preview: Option<String>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    pub error_stack: Option<String>,
    pub graph_id: Option<String>,
    pub graph_name: Option<String>,
    pub parent_trace_id: Option<String>,
    pub depth: Option<i32>,
}

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: Option<String>,
    pub node_id: String,
    pub port_id: Option<String>,
    pub event_type: EventType,
    pub timestamp: DateTime<Utc>,
    pub data: Option<Json>,
    pub duration: Option<f64>,
    pub metadata: Option<Json>,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub accepted: i64,
    pub duplicates: i64,
}

impl Store {
    /// Opens the transaction of a write to one session: finds the session's workflow (NOT_FOUND when there is no
    /// such session) and takes the workflow's lock, held until commit (see the module comment).
    async fn begin_session_write(&self, session_id: &str) -> StoreResult<(Transaction<'static, Postgres>, String)> {
        let mut tx = self.pool.begin().await?;
        // flow_trace_sessions_pkey (id, start_time) finds it in every chunk.
        let row: Option<(String,)> =
            sqlx::query_as("SELECT workflow_id FROM flow_trace_sessions WHERE id = $1 LIMIT 1")
                .bind(session_id)
                .fetch_optional(&mut *tx)
                .await?;
        let workflow_id =
            row.map(|r| r.0).ok_or_else(|| StoreError::NotFound(format!("session {session_id} does not exist")))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('flowtrace:' || $1, 0))")
            .bind(&workflow_id)
            .execute(&mut *tx)
            .await?;
        Ok((tx, workflow_id))
    }
}

/// The ids of `ids` this session already holds, whatever their timestamps. One statement, one probe of the
/// primary key (session_id, id, timestamp) per chunk for the whole batch; the per-workflow lock taken before makes
/// the answer hold until commit.
async fn stored_ids(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    session_id: &str,
    ids: &[String],
) -> StoreResult<Vec<String>> {
    // The table name is ours, never a client's.
    let sql = format!("SELECT id FROM {table} WHERE session_id = $1 AND id = ANY($2::text[])");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(session_id).bind(ids).fetch_all(&mut **tx).await?)
}

/// The CTE that adds the traces just inserted (`ins`: session_id, timestamp, status, source_node_id, target_node_id)
/// to `flow_trace_node_minutes`: per session, node and minute, the inputs and outputs and the time of the latest of
/// each (and of the latest failed output), which time travel reads instead of per-node indexes on the traces
/// (migration m20261206_000015). Shared by ingest, import and the benchmark's generated datasets.
pub const NODE_MINUTES: &str = "
    minutes AS (
        INSERT INTO flow_trace_node_minutes AS m
            (session_id, node_id, minute, inputs, outputs, last_input_at, last_output_at, last_error_at)
        SELECT session_id, node, date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch'), sum(inputs), sum(outputs),
            max(timestamp) FILTER (WHERE inputs = 1), max(timestamp) FILTER (WHERE outputs = 1),
            max(timestamp) FILTER (WHERE outputs = 1 AND status = 'ERROR')
        FROM (
            SELECT session_id, target_node_id AS node, timestamp, status, 1 AS inputs, 0 AS outputs FROM ins
            UNION ALL
            SELECT session_id, source_node_id, timestamp, status, 0, 1 FROM ins
        ) t GROUP BY 1, 2, 3
        ON CONFLICT (session_id, node_id, minute) DO UPDATE SET
            inputs = m.inputs + excluded.inputs,
            outputs = m.outputs + excluded.outputs,
            last_input_at = GREATEST(m.last_input_at, excluded.last_input_at),
            last_output_at = GREATEST(m.last_output_at, excluded.last_output_at),
            last_error_at = GREATEST(m.last_error_at, excluded.last_error_at)
    )";
