//! `flow_aggregate_refreshes`: a row per continuous aggregate that has late data waiting to be refreshed, with the
//! time the server's refresher first saw it; `storage` reports it. The pending ranges themselves are TimescaleDB's
//! invalidation logs, which every write below the watermark fills, whichever process made it.

use sea_orm_migration::prelude::*;

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &["CREATE TABLE flow_aggregate_refreshes (
                view_name TEXT PRIMARY KEY,
                pending_since TIMESTAMPTZ NOT NULL
            )"],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, &["DROP TABLE IF EXISTS flow_aggregate_refreshes"]).await
    }
}
