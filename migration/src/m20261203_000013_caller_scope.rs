//! `flowtrace_scoped`: views with the names of every table and aggregate that holds sessions' rows, each showing only
//! the rows the caller of the current transaction may see. The store reads for callers limited to their own sessions
//! or to some workflows on connections whose `search_path` puts this schema first, and names the caller in the
//! transaction (`flowtrace.user`, `flowtrace.workflows`). A connection that names nobody sees no rows: the scope
//! fails closed.
//!
//! A session is the caller's when its `user_id` is the caller's or its workflow is granted; its traces, events,
//! changes and node counts go with it. Aggregates carry no `user_id`, so they show only granted workflows.
//!
//! The views list the columns their tables had when they were made: a migration that changes one of these tables
//! must make its view again.

use sea_orm_migration::prelude::*;

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The caller's user id, or null (who matches no session).
const USER: &str = "NULLIF(current_setting('flowtrace.user', true), '')";
/// The workflows granted whole to the caller.
const WORKFLOWS: &str = "COALESCE(NULLIF(current_setting('flowtrace.workflows', true), '')::text[], '{}')";

/// Tables and aggregates with a workflow of their own, and the rows of each the caller sees.
fn views() -> Vec<(&'static str, String)> {
    let own_sessions = format!("SELECT id FROM public.flow_trace_sessions WHERE user_id = {USER}");
    let by_session = format!("workflow_id = ANY({WORKFLOWS}) OR session_id IN ({own_sessions})");
    let mut views = vec![
        ("flow_trace_sessions", format!("user_id = {USER} OR workflow_id = ANY({WORKFLOWS})")),
        ("flow_traces", by_session.clone()),
        ("flow_trace_events", by_session.clone()),
        ("flow_session_changes", by_session),
        (
            "flow_trace_node_minutes",
            format!(
                "session_id IN (SELECT id FROM public.flow_trace_sessions
                    WHERE user_id = {USER} OR workflow_id = ANY({WORKFLOWS}))"
            ),
        ),
    ];
    for aggregate in [
        "session_stats_hourly",
        "session_stats_daily",
        "node_performance_hourly",
        "edge_stats_hourly",
        "edge_duration_histograms_hourly",
        "session_duration_histograms_hourly",
    ] {
        views.push((aggregate, format!("workflow_id = ANY({WORKFLOWS})")));
    }
    views
}

fn create_view(name: &str, rows: &str) -> String {
    format!("CREATE VIEW flowtrace_scoped.{name} AS SELECT * FROM public.{name} WHERE {rows}")
}

/// The statement that makes the scoped view of `table` again with the table's current columns (after the view was
/// dropped), for the migrations that change the table.
pub(crate) fn remake_view(table: &str) -> Option<String> {
    views().into_iter().find(|(name, _)| *name == table).map(|(name, rows)| create_view(name, &rows))
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        // The index on a hypertable is made outside a transaction block, like the others.
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut statements = vec![
            // A user's own sessions: the scope's subquery, and `sessions(filter: {userId})`.
            "CREATE INDEX IF NOT EXISTS flow_trace_sessions_user_idx ON flow_trace_sessions (user_id, start_time DESC)"
                .to_owned(),
            "CREATE SCHEMA flowtrace_scoped".to_owned(),
        ];
        statements.extend(views().into_iter().map(|(name, rows)| create_view(name, &rows)));
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &["DROP SCHEMA IF EXISTS flowtrace_scoped CASCADE", "DROP INDEX IF EXISTS flow_trace_sessions_user_idx"],
        )
        .await
    }
}
