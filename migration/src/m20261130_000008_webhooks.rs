//! Webhooks: the status each session change set (a start is `RUNNING`), so a delivery names what happened even when
//! the session has moved on since; and where webhook delivery got to, so a restarted server resumes there.

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
                "ALTER TABLE flow_session_changes ADD COLUMN status TEXT",
                // One row: the snapshot of the last change log read whose changes were all delivered.
                "CREATE TABLE flow_webhook_state (
                    id SMALLINT PRIMARY KEY CHECK (id = 1),
                    mark TEXT NOT NULL,
                    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &[
                "DROP TABLE IF EXISTS flow_webhook_state",
                "ALTER TABLE flow_session_changes DROP COLUMN IF EXISTS status",
            ],
        )
        .await
    }
}
