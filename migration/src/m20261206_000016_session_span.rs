//! The time span of a session's traces, so that a read by session id visits only the chunks the session has rows in.
//!
//! A session's per-minute node rows (`flow_trace_node_minutes`) cover every minute it has traces in; their first and
//! last minute bound its traces. Read from the primary key, that is every row of the session (its nodes times its
//! minutes); this index makes it two index steps however long the session ran.

use sea_orm_migration::prelude::*;

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &[
                "CREATE INDEX IF NOT EXISTS flow_trace_node_minutes_session_idx
                    ON flow_trace_node_minutes (session_id, minute)",
                "COMMENT ON INDEX flow_trace_node_minutes_session_idx IS
                    'the time span of a session''s traces: traces(sessionId), Session.traces and their totalCount'",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, &["DROP INDEX IF EXISTS flow_trace_node_minutes_session_idx"]).await
    }
}
