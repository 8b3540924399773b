//! Analytics from the continuous aggregates (views of the same names in plain mode). Real-time aggregation makes
//! them include data newer than the last refresh.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::traces::check_range;
use super::{Sql, Store, StoreResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct SessionStatsRow {
    pub bucket: DateTime<Utc>,
    pub workflow_id: String,
    pub sessions: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub running: i64,
    pub avg_duration: Option<f64>,
    pub min_duration: Option<f64>,
    pub max_duration: Option<f64>,
    pub total_traces: i64,
    pub error_count: i64,
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct NodePerformanceRow {
    pub bucket: DateTime<Utc>,
    pub workflow_id: String,
    pub node_id: String,
    pub trace_count: i64,
    pub error_count: i64,
    pub avg_duration: Option<f64>,
    pub max_duration: Option<f64>,
    pub total_data_size: i64,
}

/// The start of the bucket holding `at`, so a range that begins mid-bucket still includes that bucket.
fn bucket_start(at: DateTime<Utc>, width: TimeDelta) -> DateTime<Utc> {
    at.duration_trunc(width).unwrap_or(at)
}

impl Store {
    /// Buckets overlapping `[from, to]`, oldest first.
    pub async fn session_stats(
        &self,
        workflow_id: Option<&str>,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionStatsRow>> {
        check_range(Some(from), Some(to))?;
        let (view, width) = match granularity {
            Granularity::Hour => ("session_stats_hourly", TimeDelta::hours(1)),
            Granularity::Day => ("session_stats_daily", TimeDelta::days(1)),
        };
        let mut sql = Sql::new(&format!(
            "SELECT bucket, workflow_id, sessions, completed, failed, cancelled, running, avg_duration, min_duration,
                max_duration, total_traces, error_count FROM {view} WHERE "
        ));
        let (f, t) = (sql.bind(bucket_start(from, width)), sql.bind(to));
        sql.push(&format!("bucket >= {f} AND bucket <= {t}"));
        if let Some(w) = workflow_id {
            let p = sql.bind(w.to_owned());
            sql.push(&format!(" AND workflow_id = {p}"));
        }
        sql.push(" ORDER BY bucket, workflow_id");
        self.all(sql).await
    }

    /// Hourly figures per workflow and node, oldest first.
    pub async fn node_performance(
        &self,
        workflow_id: Option<&str>,
        node_id: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<NodePerformanceRow>> {
        check_range(Some(from), Some(to))?;
        let mut sql = Sql::new(
            "SELECT bucket, workflow_id, node_id, trace_count, error_count, avg_duration, max_duration, total_data_size
             FROM node_performance_hourly WHERE ",
        );
        let (f, t) = (sql.bind(bucket_start(from, TimeDelta::hours(1))), sql.bind(to));
        sql.push(&format!("bucket >= {f} AND bucket <= {t}"));
        if let Some(w) = workflow_id {
            let p = sql.bind(w.to_owned());
            sql.push(&format!(" AND workflow_id = {p}"));
        }
        if let Some(n) = node_id {
            let p = sql.bind(n.to_owned());
            sql.push(&format!(" AND node_id = {p}"));
        }
        sql.push(" ORDER BY bucket, workflow_id, node_id");
        self.all(sql).await
    }
}
