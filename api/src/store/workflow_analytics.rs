//! `workflowAnalytics`: a workflow's sessions, success rate and session-duration percentiles from
//! `session_stats_hourly`, and its slowest nodes by p95 from `edge_stats_hourly`, both merged over the hourly
//! buckets of the range (`percentiles`); its errors by code from the failed traces themselves.

use chrono::{DateTime, TimeDelta, Utc};

use super::analytics::bucket_start;
use super::percentiles::{Percentiles, check_long_range, merged};
use super::report::{ErrorGroup, MAX_SLOWEST, push_error_groups};
use super::{Sql, Store, StoreError, StoreResult};

#[derive(Clone, Debug, Default, PartialEq, sqlx::FromRow)]
pub struct SessionTotals {
    pub sessions: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub running: i64,
    /// The merged histogram of the durations of the sessions that ended.
    pub histogram: Option<Vec<i64>>,
}

/// A node's received traces and their duration histogram.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct NodeDurations {
    pub node_id: String,
    pub trace_count: i64,
    pub histogram: Option<Vec<i64>>,
}

#[derive(Clone, Debug)]
pub struct WorkflowAnalytics {
    pub totals: SessionTotals,
    pub session_duration: Percentiles,
    pub errors_by_code: Vec<ErrorGroup>,
    /// The slowest nodes by p95, slowest first, with their percentiles.
    pub slowest_nodes: Vec<(NodeDurations, Percentiles)>,
}

impl Store {
    /// A workflow over the hourly buckets overlapping `[from, to]` (at most `MAX_RANGE_DAYS`), with its `slowest`
    /// nodes by p95 (1 to `MAX_SLOWEST`).
    pub async fn workflow_analytics(
        &self,
        workflow_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        slowest: i64,
    ) -> StoreResult<WorkflowAnalytics> {
        check_long_range(from, to)?;
        self.check_aggregate(Some(workflow_id))?;
        if !(1..=MAX_SLOWEST).contains(&slowest) {
            return Err(StoreError::BadInput(format!("slowestNodes must be 1 to {MAX_SLOWEST}, got {slowest}")));
        }
        let scope = |sql: &mut Sql| {
            let (w, f, t) =
                (sql.bind(workflow_id.to_owned()), sql.bind(bucket_start(from, TimeDelta::hours(1))), sql.bind(to));
            format!("workflow_id = {w} AND bucket >= {f} AND bucket <= {t}")
        };

        // session_stats_hourly: the aggregate, not the sessions, so any range costs its hours, not its sessions.
        let mut sql = Sql::new("");
        let filter = scope(&mut sql);
        let histogram = merged("session_duration_histograms_hourly", "workflow_id", &filter);
        sql.push(&format!(
            "SELECT COALESCE(sum(sessions), 0)::bigint AS sessions, COALESCE(sum(completed), 0)::bigint AS completed,
                COALESCE(sum(failed), 0)::bigint AS failed, COALESCE(sum(cancelled), 0)::bigint AS cancelled,
                COALESCE(sum(running), 0)::bigint AS running, (SELECT histogram FROM ({histogram}) h) AS histogram
             FROM session_stats_hourly WHERE {filter}"
        ));
        let totals: SessionTotals = self.all(sql).await?.into_iter().next().unwrap_or_default();

        // edge_stats_hourly, by the receiving node (as nodePerformance's durations).
        let mut sql = Sql::new("");
        let filter = scope(&mut sql);
        let histograms = merged("edge_duration_histograms_hourly", "target_node_id", &filter);
        sql.push(&format!(
            "SELECT node_id, trace_count, h.histogram
             FROM (SELECT target_node_id AS node_id, sum(trace_count)::bigint AS trace_count FROM edge_stats_hourly
                   WHERE {filter} GROUP BY target_node_id) n
             LEFT JOIN (SELECT target_node_id AS node_id, histogram FROM ({histograms}) m) h USING (node_id)"
        ));
        let nodes: Vec<NodeDurations> = self.all(sql).await?;
        let mut slowest_nodes: Vec<_> = nodes
            .into_iter()
            .map(|n| {
                let p = Percentiles::of(n.histogram.as_deref());
                (n, p)
            })
            .collect();
        let p95 = |p: &Percentiles| p.p95.unwrap_or(f64::NEG_INFINITY);
        slowest_nodes.sort_by(|(a, pa), (b, pb)| p95(pb).total_cmp(&p95(pa)).then_with(|| a.node_id.cmp(&b.node_id)));
        slowest_nodes.truncate(slowest as usize);

        // Error codes are clients' text of any cardinality, which no aggregate keeps: the failed traces of the exact
        // range are read through flow_traces_workflow_idx (workflow_id, timestamp), which the range bound limits.
        let mut sql = Sql::new("");
        let (w, f, t) = (sql.bind(workflow_id.to_owned()), sql.bind(from), sql.bind(to));
        push_error_groups(
            &mut sql,
            "error_code",
            &format!("workflow_id = {w} AND timestamp >= {f} AND timestamp <= {t}"),
        );
        let errors_by_code = self.all(sql).await?;

        let session_duration = Percentiles::of(totals.histogram.as_deref());
        Ok(WorkflowAnalytics { totals, session_duration, errors_by_code, slowest_nodes })
    }
}
