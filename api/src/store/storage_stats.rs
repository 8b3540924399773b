//! What the storage holds and how its background jobs fare, from the catalog.

use chrono::{DateTime, Utc};

use migration::Policies;

use super::aggregate_refresh::pending;
use super::{Store, StoreResult};

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TableStorage {
    pub name: String,
    pub hypertable: bool,
    pub chunks: i64,
    pub compressed_chunks: i64,
    pub total_bytes: i64,
    /// Bytes of the compressed chunks before and after compression.
    pub before_compression_bytes: Option<i64>,
    pub after_compression_bytes: Option<i64>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AggregateStatus {
    pub name: String,
    pub last_refresh: Option<DateTime<Utc>>,
    /// Seconds since the last successful refresh.
    pub lag_seconds: Option<f64>,
    /// Rows at or after this time are aggregated at read time.
    #[sqlx(skip)]
    pub watermark: Option<DateTime<Utc>>,
    /// Ranges below the watermark whose rows changed after they were materialised.
    #[sqlx(skip)]
    pub pending: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Since when the server's refresher has seen pending ranges it has not refreshed yet.
    #[sqlx(skip)]
    pub pending_since: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct JobStatus {
    pub job_id: i32,
    pub kind: String,
    pub target: Option<String>,
    pub schedule: String,
    pub last_run_status: Option<String>,
    pub last_run_started_at: Option<DateTime<Utc>>,
    pub next_start: Option<DateTime<Utc>>,
    pub total_runs: Option<i64>,
    pub total_failures: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct StorageStats {
    pub mode: String,
    pub tables: Vec<TableStorage>,
    pub aggregates: Vec<AggregateStatus>,
    pub jobs: Vec<JobStatus>,
}

impl Store {
    /// `policies` bound the pending ranges to what can be refreshed (see `aggregate_refresh`).
    pub async fn storage_stats(&self, policies: &Policies) -> StoreResult<StorageStats> {
        if self.scope().is_some() {
            return Err(super::StoreError::Forbidden(
                "storage describes every workflow's data: it needs a service_role token or an API key that is not \
                 limited to workflows"
                    .into(),
            ));
        }
        let mode = self.mode().await?;
        if !mode.is_timescaledb() {
            let tables = self
                .all(super::Sql::new(
                    "SELECT relname::text AS name, false AS hypertable, 0::bigint AS chunks, 0::bigint AS compressed_chunks,
                        pg_total_relation_size(oid) AS total_bytes, NULL::bigint AS before_compression_bytes,
                        NULL::bigint AS after_compression_bytes
                     FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'
                       AND relname IN ('flow_trace_sessions', 'flow_traces', 'flow_trace_events') ORDER BY 1",
                ))
                .await?;
            return Ok(StorageStats { mode: mode.name().into(), tables, aggregates: Vec::new(), jobs: Vec::new() });
        }
        let tables = self
            .all(super::Sql::new(
                "SELECT h.hypertable_name::text AS name, true AS hypertable,
                    (SELECT count(*) FROM timescaledb_information.chunks c
                      WHERE c.hypertable_name = h.hypertable_name AND c.hypertable_schema = h.hypertable_schema) AS chunks,
                    (SELECT count(*) FROM timescaledb_information.chunks c WHERE c.is_compressed
                      AND c.hypertable_name = h.hypertable_name AND c.hypertable_schema = h.hypertable_schema)
                      AS compressed_chunks,
                    hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) AS total_bytes,
                    s.before_compression_total_bytes AS before_compression_bytes,
                    s.after_compression_total_bytes AS after_compression_bytes
                 FROM timescaledb_information.hypertables h
                 LEFT JOIN LATERAL hypertable_compression_stats(
                    format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) s ON true
                 WHERE h.hypertable_schema = current_schema() ORDER BY 1",
            ))
            .await?;
        let mut aggregates: Vec<AggregateStatus> = self
            .all(super::Sql::new(
                // TimescaleDB records "never" as -infinity; that reads as null here.
                "SELECT c.view_name::text AS name,
                    CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END AS last_refresh,
                    CASE WHEN isfinite(s.last_successful_finish)
                        THEN extract(epoch FROM now() - s.last_successful_finish)::float8 END AS lag_seconds
                 FROM timescaledb_information.continuous_aggregates c
                 LEFT JOIN timescaledb_information.jobs j
                   ON j.proc_name = 'policy_refresh_continuous_aggregate' AND j.hypertable_name = c.view_name
                 LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
                 WHERE c.view_schema = current_schema() ORDER BY 1",
            ))
            .await?;
        let mut conn = self.pool.acquire().await?;
        let pending = pending(&mut conn, policies).await?;
        let since: Vec<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT view_name, pending_since FROM flow_aggregate_refreshes")
                .fetch_all(&mut *conn)
                .await?;
        drop(conn);
        for a in &mut aggregates {
            if let Some(p) = pending.iter().find(|p| p.view == a.name) {
                a.watermark = p.watermark;
                a.pending = p.ranges.clone();
            }
            a.pending_since = since.iter().find(|(v, _)| *v == a.name).map(|(_, at)| *at);
        }
        let jobs = self
            .all(super::Sql::new(
                "SELECT j.job_id, j.proc_name::text AS kind, j.hypertable_name::text AS target,
                    j.schedule_interval::text AS schedule, s.last_run_status::text AS last_run_status,
                    CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END AS last_run_started_at,
                    CASE WHEN isfinite(s.next_start) THEN s.next_start END AS next_start, s.total_runs, s.total_failures
                 FROM timescaledb_information.jobs j
                 LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
                 ORDER BY j.job_id",
            ))
            .await?;
        Ok(StorageStats { mode: mode.name().into(), tables, aggregates, jobs })
    }
}
