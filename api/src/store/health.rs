//! What the database is and holds, read from the catalog (never constants).

use super::{Store, StoreResult};

/// What `GET /api/health/timescaledb` and the `health` query report.
#[derive(Clone, Debug)]
pub struct Health {
    pub connected: bool,
    /// TimescaleDB extension version; null in plain mode.
    pub version: Option<String>,
    pub postgres_version: Option<String>,
    pub hypertables: Vec<String>,
    pub compression_enabled: bool,
    pub continuous_aggregates: Vec<String>,
    pub mode: String,
    /// TimescaleDB jobs whose last run failed.
    pub jobs_failing: i64,
}

impl Health {
    pub fn unreachable() -> Health {
        Health {
            connected: false,
            version: None,
            postgres_version: None,
            hypertables: Vec::new(),
            compression_enabled: false,
            continuous_aggregates: Vec::new(),
            mode: "UNKNOWN".into(),
            jobs_failing: 0,
        }
    }
}

impl Store {
    pub async fn health(&self) -> StoreResult<Health> {
        let mode = self.mode().await?;
        let (postgres_version,): (String,) =
            sqlx::query_as("SELECT current_setting('server_version')").fetch_one(&self.pool).await?;
        let mut health = Health {
            connected: true,
            version: None,
            postgres_version: Some(postgres_version),
            hypertables: Vec::new(),
            compression_enabled: false,
            continuous_aggregates: Vec::new(),
            mode: mode.name().into(),
            jobs_failing: 0,
        };
        if let migration::StorageMode::TimescaleDb { version } = mode {
            health.version = Some(version);
            let hypertables: Vec<(String, bool)> = sqlx::query_as(
                "SELECT hypertable_name::text, compression_enabled FROM timescaledb_information.hypertables
                 WHERE hypertable_schema = current_schema() ORDER BY 1",
            )
            .fetch_all(&self.pool)
            .await?;
            health.compression_enabled = hypertables.iter().any(|(_, c)| *c);
            health.hypertables = hypertables.into_iter().map(|(name, _)| name).collect();
            health.continuous_aggregates = sqlx::query_scalar(
                "SELECT view_name::text FROM timescaledb_information.continuous_aggregates
                 WHERE view_schema = current_schema() ORDER BY 1",
            )
            .fetch_all(&self.pool)
            .await?;
            health.jobs_failing = sqlx::query_scalar(
                "SELECT count(*) FROM timescaledb_information.job_stats WHERE last_run_status = 'Failed'",
            )
            .fetch_one(&self.pool)
            .await?;
        }
        Ok(health)
    }

    /// Ready: the database answers and every migration is applied.
    pub async fn ready(&self) -> StoreResult<bool> {
        Ok(self.migration_status().await?.iter().all(|(_, applied)| *applied))
    }
}

impl Store {
    /// One line per TimescaleDB policy job with its schedule, configuration and last result.
    pub async fn policy_jobs(&self) -> StoreResult<Vec<String>> {
        if !self.mode().await?.is_timescaledb() {
            return Ok(vec!["plain mode: no TimescaleDB jobs; the server deletes expired rows every hour".into()]);
        }
        let rows: Vec<(String, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT j.proc_name::text, COALESCE(j.hypertable_name::text, ''), j.schedule_interval::text,
                    COALESCE(j.config::text, ''), s.last_run_status::text
             FROM timescaledb_information.jobs j
             LEFT JOIN timescaledb_information.job_stats s USING (job_id)
             WHERE j.proc_schema = '_timescaledb_functions' AND j.proc_name LIKE 'policy_%'
             ORDER BY 2, 1",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(proc, table, every, config, last)| {
                format!(
                    "{proc} on {table}: every {every}, {config}, last run {}",
                    last.unwrap_or_else(|| "never".into())
                )
            })
            .collect())
    }
}
