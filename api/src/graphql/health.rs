//! `health`: the same figures as `GET /api/health/timescaledb`.

use async_graphql::{Context, Object, SimpleObject};

use super::store;

/// Database connectivity and what TimescaleDB provides, read from the catalog.
#[derive(SimpleObject)]
pub struct Health {
    pub connected: bool,
    /// TimescaleDB version; null in plain mode.
    pub version: Option<String>,
    pub postgres_version: Option<String>,
    pub hypertables: Vec<String>,
    pub compression_enabled: bool,
    pub continuous_aggregates: Vec<String>,
    /// TIMESCALEDB or PLAIN (UNKNOWN while the database is unreachable).
    pub mode: String,
    /// TimescaleDB jobs whose last run failed.
    pub jobs_failing: i64,
}

#[derive(Default)]
pub struct HealthQuery;

#[Object]
impl HealthQuery {
    /// Never fails: an unreachable database reports `connected: false`.
    async fn health(&self, ctx: &Context<'_>) -> Health {
        let h = store(ctx).health().await.unwrap_or_else(|_| crate::store::health::Health::unreachable());
        Health {
            connected: h.connected,
            version: h.version,
            postgres_version: h.postgres_version,
            hypertables: h.hypertables,
            compression_enabled: h.compression_enabled,
            continuous_aggregates: h.continuous_aggregates,
            mode: h.mode,
            jobs_failing: h.jobs_failing,
        }
    }
}
