//! A node's latest trace as of a moment is found from its per-minute row instead of three per-node indexes.
//!
//! `flow_trace_node_minutes` also keeps, per session, node and minute, the time of the node's latest input, output and
//! failed output. The state as of a moment takes the latest of those before its own minute (or from the raw rows of
//! that minute), then finds the trace itself with one probe of `flow_traces_session_idx` at that exact time.
//!
//! That makes `flow_traces_session_target_idx`, `flow_traces_session_source_idx` and `flow_traces_session_error_idx`
//! unneeded, and every trace written updated all three: they are dropped. Existing minutes get their times here, and
//! the caller scope's view of the table is made again with the new columns.

use sea_orm_migration::prelude::*;

use crate::m20261203_000013_caller_scope::remake_view;
use crate::run_all;

const TABLE: &str = "flow_trace_node_minutes";

#[derive(DeriveMigrationName)]
pub struct Migration;

const DROPPED: [(&str, &str); 3] = [
    ("flow_traces_session_target_idx", "ON flow_traces (session_id, target_node_id, timestamp, seq)"),
    ("flow_traces_session_source_idx", "ON flow_traces (session_id, source_node_id, timestamp, seq)"),
    (
        "flow_traces_session_error_idx",
        "ON flow_traces (session_id, source_node_id, timestamp, seq) WHERE status = 'ERROR'",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut statements = vec![
            format!("DROP VIEW IF EXISTS flowtrace_scoped.{TABLE}"),
            "ALTER TABLE flow_trace_node_minutes
                ADD COLUMN last_input_at timestamptz,
                ADD COLUMN last_output_at timestamptz,
                ADD COLUMN last_error_at timestamptz"
                .to_owned(),
            "UPDATE flow_trace_node_minutes m
             SET last_input_at = x.last_input_at, last_output_at = x.last_output_at, last_error_at = x.last_error_at
             FROM (
                 SELECT session_id, node_id, minute, max(i) AS last_input_at, max(o) AS last_output_at,
                     max(e) AS last_error_at
                 FROM (
                     SELECT session_id, target_node_id AS node_id,
                         date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch') AS minute,
                         timestamp AS i, NULL::timestamptz AS o, NULL::timestamptz AS e
                     FROM flow_traces
                     UNION ALL
                     SELECT session_id, source_node_id, date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch'),
                         NULL, timestamp, CASE WHEN status = 'ERROR' THEN timestamp END
                     FROM flow_traces
                 ) t GROUP BY session_id, node_id, minute
             ) x
             WHERE m.session_id = x.session_id AND m.node_id = x.node_id AND m.minute = x.minute"
                .to_owned(),
            "COMMENT ON INDEX flow_trace_node_minutes_pkey IS
                'sessionStateAt / workflowStateAt: node counts and latest trace times up to a minute'"
                .to_owned(),
            "COMMENT ON INDEX flow_traces_session_idx IS
                'a session''s traces by time: traces(sessionId), Session.traces, reports, timelines; a node''s latest
                 trace at the time its minute row names (sessionStateAt / workflowStateAt)'"
                .to_owned(),
        ];
        statements.extend(DROPPED.iter().map(|(name, _)| format!("DROP INDEX IF EXISTS {name}")));
        statements.extend(remake_view(TABLE));
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut statements: Vec<String> =
            DROPPED.iter().map(|(name, on)| format!("CREATE INDEX IF NOT EXISTS {name} {on}")).collect();
        statements.push(format!("DROP VIEW IF EXISTS flowtrace_scoped.{TABLE}"));
        statements.push(
            "ALTER TABLE flow_trace_node_minutes
                DROP COLUMN last_input_at, DROP COLUMN last_output_at, DROP COLUMN last_error_at"
                .to_owned(),
        );
        statements.extend(remake_view(TABLE));
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }
}
