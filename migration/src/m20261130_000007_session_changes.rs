//! `flow_session_changes`: one row per session start and end, written in the same transaction as the change, so that
//! `sessionUpdates` can read what it missed while its notifications were lost (the LISTEN connection dropped), as
//! the trace and event subscriptions do by `seq`.
//!
//! Sequence numbers are not commit order across workflows, so a subscriber cannot resume from "the highest `seq` I
//! saw". Each row carries its transaction id instead: a subscriber keeps the snapshot of its last catch-up and reads
//! the rows whose transaction that snapshot did not see. Rows are kept for a day (the server deletes older ones in
//! both modes): longer than any subscriber stays out of sync without noticing.

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
                "CREATE TABLE flow_session_changes (
                    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    session_id UUID NOT NULL,
                    workflow_id TEXT NOT NULL,
                    xid XID8 NOT NULL DEFAULT pg_current_xact_id(),
                    at TIMESTAMPTZ NOT NULL DEFAULT now()
                )",
                "CREATE INDEX flow_session_changes_xid_idx ON flow_session_changes (xid)",
                "CREATE INDEX flow_session_changes_at_idx ON flow_session_changes (at)",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, &["DROP TABLE IF EXISTS flow_session_changes"]).await
    }
}
