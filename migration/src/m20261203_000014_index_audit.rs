//! Every index on the three hypertables earns its place: each is listed below with the queries it serves, and the
//! same text is written on it (`COMMENT ON INDEX`, shown by `\di+`). Every trace and event written updates each of
//! them, so the ones no query needs are dropped:
//! - `flow_traces_source_idx`, `flow_traces_target_idx` (node, timestamp) and `flow_trace_events_node_idx`: a node
//!   filter always comes with a session or a workflow, whose own index gives the rows in the order pages want; the
//!   node is checked on those rows.
//! - `flow_trace_sessions_start_time_idx` (start_time DESC), which TimescaleDB adds to a new hypertable:
//!   `flow_trace_sessions_start_idx` (start_time DESC, id DESC) serves every query it could.
//!
//! The pairs that share a first column serve different orders and stay: `(session_id, timestamp, seq)` gives a
//! session's traces by time (pages, ranges, reports), `(session_id, seq)` those written after a cursor (live reads);
//! neither order can be read from the other index without reading all of the session's rows. Likewise for workflows.

use sea_orm_migration::prelude::*;

use crate::{mode, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Each kept index and what it is for.
const INDEXES: [(&str, &str); 23] = [
    ("flow_trace_sessions_pkey", "identity; session(id), every write to a session"),
    ("flow_trace_sessions_start_idx", "sessions() newest first, its cursor and start-time ranges; export"),
    (
        "flow_trace_sessions_workflow_idx",
        "sessions(filter: {workflowId}); runningSessions, workflowStateAt, sessionHistory",
    ),
    ("flow_trace_sessions_status_idx", "sessions(filter: {status})"),
    ("flow_trace_sessions_user_idx", "sessions(filter: {userId}); the caller scope's own sessions"),
    ("flow_traces_pkey", "identity; the duplicate check of recordTraces (session_id, id)"),
    ("flow_traces_session_idx", "a session's traces by time: traces(sessionId), Session.traces, reports, timelines"),
    ("flow_traces_session_seq_idx", "a session's traces after a cursor: live traces(sessionId); state by row mark"),
    ("flow_traces_workflow_idx", "a workflow's traces by time: traces(workflowId); workflowAnalytics from rows"),
    ("flow_traces_workflow_seq_idx", "a workflow's traces after a cursor: live traces(workflowId)"),
    ("flow_traces_session_target_idx", "sessionStateAt / workflowStateAt: each node's latest input"),
    ("flow_traces_session_source_idx", "sessionStateAt / workflowStateAt: each node's latest output"),
    ("flow_traces_session_error_idx", "sessionStateAt / workflowStateAt: each node's latest error (failed rows only)"),
    ("flow_traces_timestamp_idx", "time ranges without a session: aggregate refreshes, export, retention"),
    ("flow_trace_events_pkey", "identity; the duplicate check of recordEvents (session_id, id)"),
    ("flow_trace_events_session_idx", "a session's events by time: events(sessionId), Session.events"),
    ("flow_trace_events_session_seq_idx", "a session's events after a cursor: live events(sessionId)"),
    ("flow_trace_events_session_node_idx", "sessionStateAt / workflowStateAt: each node's latest lifecycle event"),
    ("flow_trace_events_timestamp_idx", "time ranges without a session: export, retention"),
    ("flow_trace_node_minutes_pkey", "sessionStateAt / workflowStateAt: node counts up to a minute"),
    ("flow_trace_node_minutes_minute_idx", "retention"),
    ("flow_session_changes_xid_idx", "sessionUpdates and webhooks: catching up on changes a snapshot did not see"),
    ("flow_session_changes_at_idx", "retention of the change log"),
];

const DROPPED: [(&str, &str); 4] = [
    ("flow_traces_source_idx", "ON flow_traces (source_node_id, timestamp)"),
    ("flow_traces_target_idx", "ON flow_traces (target_node_id, timestamp)"),
    ("flow_trace_events_node_idx", "ON flow_trace_events (node_id, timestamp)"),
    ("flow_trace_sessions_start_time_idx", "ON flow_trace_sessions (start_time DESC)"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut statements: Vec<String> =
            DROPPED.iter().map(|(name, _)| format!("DROP INDEX IF EXISTS {name}")).collect();
        // Plain mode has no time indexes of TimescaleDB's making: comment on those that exist.
        for (name, serves) in INDEXES {
            statements.push(format!(
                "DO $$ BEGIN IF to_regclass('{name}') IS NOT NULL THEN
                    COMMENT ON INDEX {name} IS '{}'; END IF; END $$",
                serves.replace('\'', "''")
            ));
        }
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let timescaledb = mode::timescaledb_created(manager.get_connection()).await?;
        let statements: Vec<String> = DROPPED
            .iter()
            .filter(|(name, _)| timescaledb || !name.ends_with("start_time_idx"))
            .map(|(name, on)| format!("CREATE INDEX IF NOT EXISTS {name} {on}"))
            .collect();
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }
}
