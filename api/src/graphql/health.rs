//! `health`: the same figures as `GET /api/health/timescaledb`.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

use crate::error::Gql;

use super::store;

/// Database connectivity and what TimescaleDB provides, read from the catalog.
#[derive(SimpleObject)]
pub struct Health {
    /// Whether the database answered.
    pub connected: bool,
    /// TimescaleDB version; null in plain mode.
    pub version: Option<String>,
    /// PostgreSQL server version; null while unreachable.
    pub postgres_version: Option<String>,
    /// Names of the hypertables (TimescaleDB).
    pub hypertables: Vec<String>,
    /// Whether any hypertable has compression enabled.
    pub compression_enabled: bool,
    /// Names of the continuous aggregates (TimescaleDB).
    pub continuous_aggregates: Vec<String>,
    /// TIMESCALEDB or PLAIN (UNKNOWN while the database is unreachable).
    pub mode: String,
    /// TimescaleDB jobs whose last run failed.
    pub jobs_failing: i64,
    /// The read replicas (`FLOWTRACE_READ_DATABASE_URL`) as last checked; empty when reads go to the primary only.
    pub replicas: Vec<ReplicaHealth>,
}

/// A read replica, as the server last checked it (several times a second).
#[derive(SimpleObject)]
pub struct ReplicaHealth {
    /// Host, port and database of its URL (no credentials).
    pub name: String,
    /// Whether reads go to it: it answers and is no further behind the primary than `FLOWTRACE_REPLICA_MAX_LAG_MS`.
    pub in_rotation: bool,
    /// The WAL position it has replayed (PostgreSQL's `16/B374D848` form); null before it first answered.
    pub replay_position: Option<String>,
    /// Bytes of WAL it is behind the primary; null before it first answered.
    pub lag_bytes: Option<f64>,
    /// Why it is out of the rotation, when it did not answer or is not a standby.
    pub error: Option<String>,
}

#[derive(Default)]
pub struct HealthQuery;

#[Object]
impl HealthQuery {
    /// Never fails: an unreachable database reports `connected: false`.
    #[graphql(complexity = "super::CATALOG_COST + child_complexity")]
    async fn health(&self, ctx: &Context<'_>) -> Health {
        let store = store(ctx);
        let h = store
            .probe(store.health())
            .await
            .unwrap_or_else(|err| crate::store::health::Health::unreachable(err.to_string()));
        Health {
            connected: h.connected,
            version: h.version,
            postgres_version: h.postgres_version,
            hypertables: h.hypertables,
            compression_enabled: h.compression_enabled,
            continuous_aggregates: h.continuous_aggregates,
            mode: h.mode,
            jobs_failing: h.jobs_failing,
            replicas: replicas(&store),
        }
    }
}

fn replicas(store: &crate::store::Store) -> Vec<ReplicaHealth> {
    let Some(replicas) = store.replicas() else { return Vec::new() };
    replicas
        .states()
        .into_iter()
        .map(|(name, s)| ReplicaHealth {
            name,
            in_rotation: s.in_rotation,
            replay_position: s.replay.map(|p| p.to_string()),
            lag_bytes: s.lag_bytes.map(|b| b as f64),
            error: s.error,
        })
        .collect()
}

/// One of the three tables.
#[derive(SimpleObject)]
pub struct TableStorage {
    /// The table's name.
    pub name: String,
    /// False in plain mode.
    pub hypertable: bool,
    /// Chunks of the hypertable; 0 in plain mode.
    pub chunks: i64,
    /// Of those, compressed.
    pub compressed_chunks: i64,
    /// Bytes on disk, indexes and TOAST included.
    pub total_bytes: i64,
    /// Bytes of the compressed chunks before compression; null when none is compressed.
    pub before_compression_bytes: Option<i64>,
    /// Bytes of the compressed chunks now.
    pub after_compression_bytes: Option<i64>,
    /// before / after; null when nothing is compressed.
    pub compression_ratio: Option<f64>,
}

/// A continuous aggregate's freshness.
#[derive(SimpleObject)]
pub struct AggregateStatus {
    /// The continuous aggregate (a view of the same name in plain mode).
    pub name: String,
    /// When its last successful refresh finished; null in plain mode and before the first.
    pub last_refresh: Option<DateTime<Utc>>,
    /// Seconds since the last successful refresh.
    pub lag_seconds: Option<f64>,
    /// Rows at or after this time are aggregated when read, so they are always included; null in plain mode and
    /// before the first refresh.
    pub watermark: Option<DateTime<Utc>>,
    /// Ranges below the watermark whose rows were written or changed after they were materialised (late data),
    /// oldest first. The server refreshes them within seconds; until then the analytics miss those changes. Empty
    /// when the aggregate is exact (always in plain mode).
    pub pending_ranges: Vec<TimeRange>,
    /// Seconds the oldest pending range has waited since the server's refresher saw it; null when none waits.
    pub pending_seconds: Option<f64>,
}

/// A time range `[from, to)`.
#[derive(SimpleObject)]
pub struct TimeRange {
    /// Start, included.
    pub from: DateTime<Utc>,
    /// End, excluded.
    pub to: DateTime<Utc>,
}

/// A TimescaleDB background job.
#[derive(SimpleObject)]
pub struct JobStatus {
    /// TimescaleDB's job id.
    pub job_id: i32,
    /// e.g. policy_compression, policy_retention, policy_refresh_continuous_aggregate.
    pub kind: String,
    /// The hypertable or continuous aggregate it works on.
    pub target: Option<String>,
    /// How often it runs, as a PostgreSQL interval.
    pub schedule: String,
    /// Success or Failed; null before its first run.
    pub last_run_status: Option<String>,
    /// When its last run started.
    pub last_run_started_at: Option<DateTime<Utc>>,
    /// When it runs next.
    pub next_start: Option<DateTime<Utc>>,
    /// Runs so far.
    pub total_runs: Option<i64>,
    /// Of those, failed.
    pub total_failures: Option<i64>,
}

/// What the database holds and how it is kept.
#[derive(SimpleObject)]
pub struct StorageStats {
    /// TIMESCALEDB or PLAIN.
    pub mode: String,
    /// The sessions, traces and events tables.
    pub tables: Vec<TableStorage>,
    /// The continuous aggregates behind the analytics queries.
    pub aggregates: Vec<AggregateStatus>,
    /// TimescaleDB's background jobs (compression, retention, refresh); empty in plain mode.
    pub jobs: Vec<JobStatus>,
}

#[derive(Default)]
pub struct StorageQuery;

#[Object]
impl StorageQuery {
    /// Tables, chunks and their sizes, compression, aggregate refresh lag, and background jobs with their last status.
    #[graphql(complexity = "super::CATALOG_COST + child_complexity")]
    async fn storage(&self, ctx: &Context<'_>) -> async_graphql::Result<StorageStats> {
        let s = store(ctx).storage_stats(ctx.data_unchecked::<migration::Policies>()).await.gql()?;
        Ok(StorageStats {
            mode: s.mode,
            tables: s
                .tables
                .into_iter()
                .map(|t| TableStorage {
                    compression_ratio: match (t.before_compression_bytes, t.after_compression_bytes) {
                        (Some(before), Some(after)) if after > 0 => Some(before as f64 / after as f64),
                        _ => None,
                    },
                    name: t.name,
                    hypertable: t.hypertable,
                    chunks: t.chunks,
                    compressed_chunks: t.compressed_chunks,
                    total_bytes: t.total_bytes,
                    before_compression_bytes: t.before_compression_bytes,
                    after_compression_bytes: t.after_compression_bytes,
                })
                .collect(),
            aggregates: s
                .aggregates
                .into_iter()
                .map(|a| AggregateStatus {
                    name: a.name,
                    last_refresh: a.last_refresh,
                    lag_seconds: a.lag_seconds,
                    watermark: a.watermark,
                    pending_ranges: a.pending.into_iter().map(|(from, to)| TimeRange { from, to }).collect(),
                    pending_seconds: a
                        .pending_since
                        .map(|at| (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0),
                })
                .collect(),
            jobs: s
                .jobs
                .into_iter()
                .map(|j| JobStatus {
                    job_id: j.job_id,
                    kind: j.kind,
                    target: j.target,
                    schedule: j.schedule,
                    last_run_status: j.last_run_status,
                    last_run_started_at: j.last_run_started_at,
                    next_start: j.next_start,
                    total_runs: j.total_runs,
                    total_failures: j.total_failures,
                })
                .collect(),
        })
    }
}
