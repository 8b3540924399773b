//! The flowtrace schema. Each migration builds the TimescaleDB form (hypertables, compression, continuous aggregates,
//! policies) when the `timescaledb` extension can be used, and the plain-PostgreSQL form with the same table, column
//! and view names otherwise. See DESIGN §2.

pub use sea_orm_migration::prelude::*;

pub mod histogram;
mod m20261124_000001_create_sessions;
mod m20261124_000002_create_traces;
mod m20261124_000003_create_events;
mod m20261124_000004_continuous_aggregates;
mod m20261124_000005_policies;
mod m20261124_000006_node_state;
mod m20261130_000007_session_changes;
mod m20261130_000008_webhooks;
mod m20261202_000009_text_ids;
mod m20261203_000010_edge_stats;
mod m20261203_000011_aggregate_refreshes;
mod m20261203_000012_duration_histograms;
mod m20261203_000013_caller_scope;
mod m20261203_000014_index_audit;
mod m20261206_000015_node_latest;
pub mod mode;
pub mod policies;

pub use mode::StorageMode;
pub use policies::Policies;
pub use sea_orm_migration::MigrationStatus;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_sessions::Migration),
            Box::new(m20261124_000002_create_traces::Migration),
            Box::new(m20261124_000003_create_events::Migration),
            Box::new(m20261124_000004_continuous_aggregates::Migration),
            Box::new(m20261124_000005_policies::Migration),
            Box::new(m20261124_000006_node_state::Migration),
            Box::new(m20261130_000007_session_changes::Migration),
            Box::new(m20261130_000008_webhooks::Migration),
            Box::new(m20261202_000009_text_ids::Migration),
            Box::new(m20261203_000010_edge_stats::Migration),
            Box::new(m20261203_000011_aggregate_refreshes::Migration),
            Box::new(m20261203_000012_duration_histograms::Migration),
            Box::new(m20261203_000013_caller_scope::Migration),
            Box::new(m20261203_000014_index_audit::Migration),
            Box::new(m20261206_000015_node_latest::Migration),
        ]
    }
}

/// Runs each statement on its own: non-transactional migrations (continuous aggregates) need one statement per call.
pub(crate) async fn run_all(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    for sql in statements {
        conn.execute_unprepared(sql).await?;
    }
    Ok(())
}
