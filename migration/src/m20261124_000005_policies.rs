//! Compression, retention and refresh policies with their default intervals (TimescaleDB only; plain mode's server
//! deletes expired rows itself).

use sea_orm_migration::prelude::*;

use crate::policies::Policies;
use crate::{mode, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        Policies::default().apply(manager.get_connection()).await.map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !mode::timescaledb_created(manager.get_connection()).await? {
            return Ok(());
        }
        let mut statements = Vec::new();
        for t in Policies::default().tables {
            statements.push(format!("SELECT remove_retention_policy('{}', if_exists => true)", t.table));
            statements.push(format!("SELECT remove_compression_policy('{}', if_exists => true)", t.table));
            // Compressed chunks must be decompressed before compression can be switched off.
            statements
                .push(format!("SELECT decompress_chunk(c, if_compressed => true) FROM show_chunks('{}') c", t.table));
            statements.push(format!("ALTER TABLE {} SET (timescaledb.compress = false)", t.table));
        }
        for a in Policies::default().aggregates {
            // An aggregate a later migration created is gone already when this runs.
            statements.push(format!(
                "SELECT remove_continuous_aggregate_policy(to_regclass('{0}'), if_exists => true)
                 WHERE to_regclass('{0}') IS NOT NULL",
                a.view
            ));
        }
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }
}
