//! Analytics from the continuous aggregates (views of the same names in plain mode). Real-time aggregation makes
//! them include data newer than the last refresh, and `aggregate_refresh` older data written late. The session
//! history, at any bucket size, is read from the sessions themselves, so a caller limited to its own sessions gets
//! it for them; the aggregates need the workflow granted (`Scope::check_aggregate`).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

use super::percentiles::merged;
use super::time_travel::MAX_TIMELINE_BUCKETS;
use super::traces::check_range;
use super::{Sql, Store, StoreError, StoreResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

/// Selected in this order by `session_stats` and `session_history` (see its `FromRow`).
#[derive(Clone, Debug, PartialEq)]
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

/// Selected in this order by `node_performance` (see its `FromRow`).
#[derive(Clone, Debug, PartialEq)]
pub struct NodePerformanceRow {
    pub bucket: DateTime<Utc>,
    pub workflow_id: String,
    pub node_id: String,
    pub trace_count: i64,
    pub error_count: i64,
    pub avg_duration: Option<f64>,
    pub max_duration: Option<f64>,
    pub total_data_size: i64,
    /// The merged duration histogram of the traces it received (`percentiles`).
    pub histogram: Option<Vec<i64>>,
}

// The analytics rows are decoded by position and without the type check of `try_get`: an answer holds thousands, the
// lookup of each column by name and the check were most of their decoding (see BENCHMARKS.md), and the statements are
// ours (the integration tests read every column of each, in both storage modes).
impl FromRow<'_, PgRow> for SessionStatsRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(SessionStatsRow {
            bucket: row.try_get_unchecked(0)?,
            workflow_id: row.try_get_unchecked(1)?,
            sessions: row.try_get_unchecked(2)?,
            completed: row.try_get_unchecked(3)?,
            failed: row.try_get_unchecked(4)?,
            cancelled: row.try_get_unchecked(5)?,
            running: row.try_get_unchecked(6)?,
            avg_duration: row.try_get_unchecked(7)?,
            min_duration: row.try_get_unchecked(8)?,
            max_duration: row.try_get_unchecked(9)?,
            total_traces: row.try_get_unchecked(10)?,
            error_count: row.try_get_unchecked(11)?,
        })
    }
}

impl FromRow<'_, PgRow> for NodePerformanceRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(NodePerformanceRow {
            bucket: row.try_get_unchecked(0)?,
            workflow_id: row.try_get_unchecked(1)?,
            node_id: row.try_get_unchecked(2)?,
            trace_count: row.try_get_unchecked(3)?,
            error_count: row.try_get_unchecked(4)?,
            avg_duration: row.try_get_unchecked(5)?,
            max_duration: row.try_get_unchecked(6)?,
            total_data_size: row.try_get_unchecked(7)?,
            histogram: row.try_get_unchecked(8)?,
        })
    }
}

/// The start of the bucket holding `at`, so a range that begins mid-bucket still includes that bucket.
pub(crate) fn bucket_start(at: DateTime<Utc>, width: TimeDelta) -> DateTime<Utc> {
    at.duration_trunc(width).unwrap_or(at)
}

impl Store {
    /// Buckets overlapping `[from, to]`, oldest first, then by workflow id (bytewise). Sorted here: the database
    /// would sort by its collation, a large part of its time on large answers (see BENCHMARKS.md).
    pub async fn session_stats(
        &self,
        workflow_id: Option<&str>,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionStatsRow>> {
        check_range(Some(from), Some(to))?;
        self.check_aggregate(workflow_id)?;
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
        let mut rows: Vec<SessionStatsRow> = self.all(sql).await?;
        rows.sort_unstable_by(|a, b| (a.bucket, &a.workflow_id).cmp(&(b.bucket, &b.workflow_id)));
        Ok(rows)
    }

    /// A workflow's sessions by start time in buckets of `bucket_seconds` from `from` (aligned to it) to `to`, every
    /// bucket present (zero when empty), oldest first. Read from flow_trace_sessions_workflow_idx
    /// (workflow_id, start_time), so any bucket size works; the bucket count is bounded.
    pub async fn session_history(
        &self,
        workflow_id: &str,
        bucket_seconds: i64,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionStatsRow>> {
        if bucket_seconds <= 0 {
            return Err(StoreError::BadInput(format!("bucketSeconds must be > 0, got {bucket_seconds}")));
        }
        check_range(Some(from), Some(to))?;
        let buckets = (to - from).num_seconds() / bucket_seconds + 1;
        if buckets > MAX_TIMELINE_BUCKETS {
            return Err(StoreError::BadInput(format!(
                "the history would have {buckets} buckets; the most is {MAX_TIMELINE_BUCKETS}: use larger buckets or a shorter range"
            )));
        }
        let mut sql = Sql::new("");
        let (w, b, f, t) =
            (sql.bind(workflow_id.to_owned()), sql.bind(bucket_seconds as f64), sql.bind(from), sql.bind(to));
        const MS: &str = "extract(epoch FROM end_time - start_time)::float8 * 1000";
        sql.push(&format!(
            "WITH s AS (
                SELECT {f} + floor(extract(epoch FROM start_time - {f}) / {b}) * make_interval(secs => {b}) AS bucket,
                    status, start_time, end_time, total_traces, error_count
                FROM flow_trace_sessions WHERE workflow_id = {w} AND start_time >= {f} AND start_time <= {t}
             ), agg AS (
                SELECT bucket, count(*) AS sessions,
                    count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
                    count(*) FILTER (WHERE status = 'FAILED') AS failed,
                    count(*) FILTER (WHERE status = 'CANCELLED') AS cancelled,
                    count(*) FILTER (WHERE status = 'RUNNING') AS running,
                    avg({MS}) AS avg_duration, min({MS}) AS min_duration, max({MS}) AS max_duration,
                    sum(total_traces)::bigint AS total_traces, sum(error_count)::bigint AS error_count
                FROM s GROUP BY bucket
             ), series AS (SELECT generate_series({f}, {t}, make_interval(secs => {b})) AS bucket)
             SELECT series.bucket, {w} AS workflow_id, COALESCE(sessions, 0) AS sessions, COALESCE(completed, 0) AS completed,
                COALESCE(failed, 0) AS failed, COALESCE(cancelled, 0) AS cancelled, COALESCE(running, 0) AS running,
                avg_duration, min_duration, max_duration, COALESCE(total_traces, 0) AS total_traces,
                COALESCE(error_count, 0) AS error_count
             FROM series LEFT JOIN agg USING (bucket) ORDER BY 1"
        ));
        self.all(sql).await
    }

    /// Hourly figures per workflow and node, oldest first, then by workflow and node id (bytewise), sorted here as
    /// `session_stats`'s.
    pub async fn node_performance(
        &self,
        workflow_id: Option<&str>,
        node_id: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        percentiles: bool,
    ) -> StoreResult<Vec<NodePerformanceRow>> {
        check_range(Some(from), Some(to))?;
        self.check_aggregate(workflow_id)?;
        let mut sql = Sql::new("");
        let (f, t) = (sql.bind(bucket_start(from, TimeDelta::hours(1))), sql.bind(to));
        let mut filter = format!("bucket >= {f} AND bucket <= {t}");
        if let Some(w) = workflow_id {
            let p = sql.bind(w.to_owned());
            filter.push_str(&format!(" AND workflow_id = {p}"));
        }
        // The durations of a node are those of the traces it received, as `avg_duration`'s. Merging the histograms
        // costs far more than the counts, so it is done only for callers who asked for percentiles.
        let histograms = percentiles
            .then(|| merged("edge_duration_histograms_hourly", "bucket, workflow_id, target_node_id", &filter));
        if let Some(n) = node_id {
            let p = sql.bind(n.to_owned());
            filter.push_str(&format!(" AND node_id = {p}"));
        }
        let columns = "bucket, workflow_id, node_id, trace_count, error_count, avg_duration, max_duration, \
            total_data_size";
        sql.push(&match histograms {
            // USING merges the join's keys, so the filter's unqualified names are the node rows' own.
            Some(histograms) => format!(
                "SELECT {columns}, h.histogram
                 FROM node_performance_hourly
                 LEFT JOIN (SELECT bucket, workflow_id, target_node_id AS node_id, histogram FROM ({histograms}) m) h
                    USING (bucket, workflow_id, node_id)
                 WHERE {filter}"
            ),
            None => {
                format!("SELECT {columns}, NULL::bigint[] AS histogram FROM node_performance_hourly WHERE {filter}")
            }
        });
        let mut rows: Vec<NodePerformanceRow> = self.all(sql).await?;
        rows.sort_unstable_by(|a, b| {
            (a.bucket, &a.workflow_id, &a.node_id).cmp(&(b.bucket, &b.workflow_id, &b.node_id))
        });
        Ok(rows)
    }
}
