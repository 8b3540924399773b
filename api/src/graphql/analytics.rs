//! Analytics: `sessionStats`, `nodePerformance` and `workflowAnalytics`, read from the continuous aggregates, and
//! `sessionHistory`.

use async_graphql::{Context, Enum, InputType, Object, ServerResult, SimpleObject, Value};
use chrono::{DateTime, Utc};

use super::one_pass::{self, List, OnePass, Selected};
use super::report::ErrorCount;
use super::store;
use crate::error::Gql;
use crate::store::analytics::{self, NodePerformanceRow, SessionStatsRow};
use crate::store::percentiles::Percentiles;
use crate::store::workflow_analytics;

/// The bucket width of `sessionStats`.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// One bucket per hour (UTC).
    Hour,
    /// One bucket per day (UTC).
    Day,
}

/// Sessions of one workflow that started in one bucket. Resolved in one pass (see `one_pass`): an answer holds up to
/// thousands of buckets. `SessionStatsBucketType` declares it to the schema.
pub struct SessionStatsBucket(SessionStatsBucketType);

one_pass::output_type!(SessionStatsBucket, SessionStatsBucketType);

impl OnePass for SessionStatsBucket {
    const TYPE_NAME: &'static str = "SessionStatsBucket";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        let b = &self.0;
        Ok(match field.name() {
            "bucket" => b.bucket.to_value(),
            "workflowId" => b.workflow_id.to_value(),
            "sessions" => b.sessions.to_value(),
            "completed" => b.completed.to_value(),
            "failed" => b.failed.to_value(),
            "cancelled" => b.cancelled.to_value(),
            "running" => b.running.to_value(),
            "avgDuration" => b.avg_duration.to_value(),
            "minDuration" => b.min_duration.to_value(),
            "maxDuration" => b.max_duration.to_value(),
            "totalTraces" => b.total_traces.to_value(),
            "errorCount" => b.error_count.to_value(),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// Sessions of one workflow that started in one bucket (0 in every count for a bucket without any).
#[derive(SimpleObject)]
#[graphql(name = "SessionStatsBucket")]
pub struct SessionStatsBucketType {
    /// Start of the hour or day.
    pub bucket: DateTime<Utc>,
    /// The workflow.
    pub workflow_id: String,
    /// Sessions started in the bucket.
    pub sessions: i64,
    /// Of those, ended COMPLETED.
    pub completed: i64,
    /// Of those, ended FAILED.
    pub failed: i64,
    /// Of those, ended CANCELLED.
    pub cancelled: i64,
    /// Of those, still running: now in `sessionHistory`, when the bucket was last aggregated in `sessionStats`.
    pub running: i64,
    /// Milliseconds, over sessions that ended.
    pub avg_duration: Option<f64>,
    /// Milliseconds, shortest session that ended.
    pub min_duration: Option<f64>,
    /// Milliseconds, longest session that ended.
    pub max_duration: Option<f64>,
    /// Traces of the sessions started in the bucket.
    pub total_traces: i64,
    /// Of those traces, status ERROR.
    pub error_count: i64,
}

impl From<SessionStatsRow> for SessionStatsBucket {
    fn from(r: SessionStatsRow) -> Self {
        SessionStatsBucket(SessionStatsBucketType {
            bucket: r.bucket,
            workflow_id: r.workflow_id,
            sessions: r.sessions,
            completed: r.completed,
            failed: r.failed,
            cancelled: r.cancelled,
            running: r.running,
            avg_duration: r.avg_duration,
            min_duration: r.min_duration,
            max_duration: r.max_duration,
            total_traces: r.total_traces,
            error_count: r.error_count,
        })
    }
}

/// One node of one workflow in one hour: what it received, and the failed traces it emitted. Resolved in one pass (see
/// `one_pass`); `NodePerformanceBucketType` declares it to the schema.
pub struct NodePerformanceBucket(NodePerformanceBucketType);

one_pass::output_type!(NodePerformanceBucket, NodePerformanceBucketType);

impl OnePass for NodePerformanceBucket {
    const TYPE_NAME: &'static str = "NodePerformanceBucket";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        let b = &self.0;
        Ok(match field.name() {
            "bucket" => b.bucket.to_value(),
            "workflowId" => b.workflow_id.to_value(),
            "nodeId" => b.node_id.to_value(),
            "traceCount" => b.trace_count.to_value(),
            "errorCount" => b.error_count.to_value(),
            "avgDuration" => b.avg_duration.to_value(),
            "maxDuration" => b.max_duration.to_value(),
            "totalDataSize" => b.total_data_size.to_value(),
            "percentiles" => field.nested(&b.percentiles)?,
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// One node of one workflow in one hour: what it received, and the failed traces it emitted.
#[derive(SimpleObject)]
#[graphql(name = "NodePerformanceBucket")]
pub struct NodePerformanceBucketType {
    /// Start of the hour.
    pub bucket: DateTime<Utc>,
    /// The workflow.
    pub workflow_id: String,
    /// The node.
    pub node_id: String,
    /// Traces it received (it was their target).
    pub trace_count: i64,
    /// Traces it emitted with status ERROR: the node that failed, as in `NodeStatus` rule 2 (not the node that
    /// received the failed trace).
    pub error_count: i64,
    /// Milliseconds, over the traces it received; null when it received none with a duration.
    pub avg_duration: Option<f64>,
    /// Milliseconds, the longest trace it received.
    pub max_duration: Option<f64>,
    /// Bytes it received.
    pub total_data_size: i64,
    /// Percentiles of the durations of the traces it received.
    pub percentiles: DurationPercentiles,
}

/// Duration percentiles in milliseconds, merged from the aggregates' log-scale histograms: each is the
/// nearest-rank percentile within a relative error of 6 % (the histogram's buckets are 10^(1/40) wide, from
/// 0.01 ms to 10^9 ms; shorter durations count as 0.01 ms, longer as 10^9 ms). Null without durations.
#[derive(SimpleObject, Clone, Copy, Default)]
pub struct DurationPercentiles {
    /// The median, within 6 %.
    pub p50: Option<f64>,
    /// The 95th percentile, within 6 %.
    pub p95: Option<f64>,
    /// The 99th percentile, within 6 %.
    pub p99: Option<f64>,
}

impl OnePass for DurationPercentiles {
    const TYPE_NAME: &'static str = "DurationPercentiles";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        Ok(match field.name() {
            "p50" => self.p50.to_value(),
            "p95" => self.p95.to_value(),
            "p99" => self.p99.to_value(),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

impl From<Percentiles> for DurationPercentiles {
    fn from(p: Percentiles) -> Self {
        DurationPercentiles { p50: p.p50, p95: p.p95, p99: p.p99 }
    }
}

impl From<NodePerformanceRow> for NodePerformanceBucket {
    fn from(r: NodePerformanceRow) -> Self {
        NodePerformanceBucket(NodePerformanceBucketType {
            bucket: r.bucket,
            workflow_id: r.workflow_id,
            node_id: r.node_id,
            trace_count: r.trace_count,
            error_count: r.error_count,
            avg_duration: r.avg_duration,
            max_duration: r.max_duration,
            total_data_size: r.total_data_size,
            percentiles: Percentiles::of(r.histogram.as_deref()).into(),
        })
    }
}

/// A node of a workflow with the durations of the traces it received.
#[derive(SimpleObject)]
pub struct NodeDurations {
    /// The node.
    pub node_id: String,
    /// Traces it received.
    pub trace_count: i64,
    /// Percentiles of their durations.
    pub percentiles: DurationPercentiles,
}

/// A workflow over a range: its sessions, their durations and errors, and its slowest nodes.
#[derive(SimpleObject)]
pub struct WorkflowAnalytics {
    /// Sessions started in the range's hours.
    pub sessions: i64,
    /// Of those, ended COMPLETED.
    pub completed: i64,
    /// Of those, ended FAILED.
    pub failed: i64,
    /// Of those, ended CANCELLED.
    pub cancelled: i64,
    /// Of those, running when their hour was last aggregated.
    pub running: i64,
    /// COMPLETED sessions over the sessions that ended, 0 to 1; null when none ended.
    pub success_rate: Option<f64>,
    /// Percentiles of the durations of the sessions that ended.
    pub session_duration: DurationPercentiles,
    /// Failed traces of the range by error code, most frequent first, with a sample message.
    pub errors_by_code: Vec<ErrorCount>,
    /// The nodes with the highest p95 of the durations of the traces they received, slowest first.
    pub slowest_nodes: Vec<NodeDurations>,
}

impl From<workflow_analytics::WorkflowAnalytics> for WorkflowAnalytics {
    fn from(w: workflow_analytics::WorkflowAnalytics) -> Self {
        let t = w.totals;
        let ended = t.completed + t.failed + t.cancelled;
        WorkflowAnalytics {
            sessions: t.sessions,
            completed: t.completed,
            failed: t.failed,
            cancelled: t.cancelled,
            running: t.running,
            success_rate: (ended > 0).then(|| t.completed as f64 / ended as f64),
            session_duration: w.session_duration.into(),
            errors_by_code: w.errors_by_code.into_iter().map(Into::into).collect(),
            slowest_nodes: w
                .slowest_nodes
                .into_iter()
                .map(|(n, p)| NodeDurations { node_id: n.node_id, trace_count: n.trace_count, percentiles: p.into() })
                .collect(),
        }
    }
}

#[derive(Default)]
pub struct AnalyticsQuery;

#[Object]
impl AnalyticsQuery {
    /// Session counts and durations per workflow and hour or day, for buckets overlapping `[from, to]`, from
    /// `session_stats_hourly` / `session_stats_daily` (including data newer than their last refresh). Oldest first,
    /// then by workflow id (bytewise).
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn session_stats(
        &self,
        ctx: &Context<'_>,
        workflow_id: Option<String>,
        granularity: Granularity,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> async_graphql::Result<List<SessionStatsBucket>> {
        let granularity = match granularity {
            Granularity::Hour => analytics::Granularity::Hour,
            Granularity::Day => analytics::Granularity::Day,
        };
        let rows = store(ctx).session_stats(workflow_id.as_deref(), granularity, from, to).await.gql()?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// A workflow's run history: its sessions by start time in buckets of `bucketSeconds` (any size) from `from`
    /// (the first bucket starts there) to `to`, every bucket present, oldest first, each with its sessions' status
    /// now. At most 10 000 buckets (BAD_USER_INPUT beyond).
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn session_history(
        &self,
        ctx: &Context<'_>,
        workflow_id: String,
        bucket_seconds: i32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> async_graphql::Result<List<SessionStatsBucket>> {
        let rows = store(ctx).session_history(&workflow_id, bucket_seconds.into(), from, to).await.gql()?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Hourly throughput, errors, durations and bytes per workflow and node, for buckets overlapping `[from, to]`,
    /// from `node_performance_hourly` (a view over the `edge_stats_hourly` aggregate, including data newer than its
    /// last refresh). A node appears in an hour when it received a trace or emitted a failed one. Its percentiles
    /// come from the aggregate's duration histograms, merged only when `percentiles` is selected. Oldest first, then
    /// by workflow and node id (bytewise).
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn node_performance(
        &self,
        ctx: &Context<'_>,
        workflow_id: Option<String>,
        node_id: Option<String>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> async_graphql::Result<List<NodePerformanceBucket>> {
        let percentiles = ctx.look_ahead().field("percentiles").exists();
        let rows = store(ctx)
            .node_performance(workflow_id.as_deref(), node_id.as_deref(), from, to, percentiles)
            .await
            .gql()?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// One workflow over the hours overlapping `[from, to]` (at most 31 days, BAD_USER_INPUT beyond): sessions and
    /// success rate, session-duration percentiles, errors by code, and the `slowestNodes` (1 to 100, default 5)
    /// nodes by p95. Sessions and durations come from the `session_stats_hourly` and `edge_stats_hourly`
    /// aggregates (their histograms merged, never a scan of raw traces); errors by code from the failed traces in
    /// `[from, to]`, through the workflow's trace index.
    // Three queries: the sessions, the nodes and the errors.
    #[graphql(complexity = "super::QUERY_COST * 3 + child_complexity")]
    async fn workflow_analytics(
        &self,
        ctx: &Context<'_>,
        workflow_id: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        slowest_nodes: Option<i32>,
    ) -> async_graphql::Result<WorkflowAnalytics> {
        let w = store(ctx).workflow_analytics(&workflow_id, from, to, slowest_nodes.unwrap_or(5).into()).await.gql()?;
        Ok(w.into())
    }
}

#[cfg(test)]
mod tests {
    //! The one-pass buckets must answer every selection as their derived declarations do.

    use async_graphql::{EmptyMutation, EmptySubscription, Schema};
    use serde_json::{Value as JsonValue, json};

    use super::*;
    use crate::graphql::one_pass::testing::{assert_same_answers, every_field, run};

    struct Rows(Vec<SessionStatsRow>, Vec<NodePerformanceRow>);

    #[Object]
    impl Rows {
        async fn declared(&self) -> Vec<SessionStatsBucketType> {
            self.0.iter().cloned().map(|r| SessionStatsBucket::from(r).0).collect()
        }
        async fn resolved(&self) -> List<SessionStatsBucket> {
            self.0.iter().cloned().map(SessionStatsBucket::from).collect()
        }
        async fn declared_nodes(&self) -> Vec<NodePerformanceBucketType> {
            self.1.iter().cloned().map(|r| NodePerformanceBucket::from(r).0).collect()
        }
        async fn resolved_nodes(&self) -> List<NodePerformanceBucket> {
            self.1.iter().cloned().map(NodePerformanceBucket::from).collect()
        }
    }

    fn schema() -> Schema<Rows, EmptyMutation, EmptySubscription> {
        let at = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let stats = SessionStatsRow {
            bucket: at,
            workflow_id: "wf:1".into(),
            sessions: 9_007_199_254,
            completed: 7,
            failed: 1,
            cancelled: 1,
            running: 0,
            avg_duration: Some(12.5),
            min_duration: Some(0.25),
            max_duration: Some(40.0),
            total_traces: 120,
            error_count: 3,
        };
        let empty = SessionStatsRow {
            sessions: 0,
            avg_duration: None,
            min_duration: None,
            max_duration: None,
            ..stats.clone()
        };
        let mut histogram = vec![0; (migration::histogram::BUCKETS + 2) as usize];
        // p50, p95 and p99 in three different buckets.
        histogram[100] = 90;
        histogram[150] = 6;
        histogram[200] = 4;
        let node = NodePerformanceRow {
            bucket: at,
            workflow_id: "wf:1".into(),
            node_id: "n1".into(),
            trace_count: 6,
            error_count: 1,
            avg_duration: Some(3.5),
            max_duration: Some(9.0),
            total_data_size: 4096,
            histogram: Some(histogram),
        };
        let bare = NodePerformanceRow { avg_duration: None, max_duration: None, histogram: None, ..node.clone() };
        Schema::new(Rows(vec![stats, empty], vec![node, bare]), EmptyMutation, EmptySubscription)
    }

    #[tokio::test]
    async fn one_pass_buckets_answer_as_the_derived_resolvers_do() {
        let schema = schema();
        let vars = json!({ "yes": true, "no": false });
        for (declared, resolved, type_name, fragment) in [
            ("declared", "resolved", "SessionStatsBucket", "fragment F on SessionStatsBucket { sessions avgDuration }"),
            (
                "declaredNodes",
                "resolvedNodes",
                "NodePerformanceBucket",
                "fragment F on NodePerformanceBucket { percentiles { p99 } avgDuration }",
            ),
        ] {
            let all = every_field(&schema, type_name, &[]).await;
            let shapes = [
                ("", all.clone(), ""),
                // Aliases, __typename, a key asked twice.
                ("", "__typename a: bucket b: bucket workflowId workflowId".into(), ""),
                // Named and inline fragments.
                ("", format!("...F ... on {type_name} {{ errorCount }} ... {{ maxDuration }}"), fragment),
                // @skip and @include by variable.
                ("($yes: Boolean!, $no: Boolean!)", "bucket @skip(if: $yes) errorCount @include(if: $no)".into(), ""),
            ];
            for answer in assert_same_answers(&schema, (declared, resolved), &shapes, vars.clone()).await {
                assert_eq!(answer.as_array().map(Vec::len), Some(2), "{answer}");
            }
        }

        let data =
            run(&schema, "{ resolved { sessions avgDuration } resolvedNodes { percentiles { p50 p99 } } }", json!({}))
                .await;
        assert_eq!(data["resolved"][0]["sessions"], 9_007_199_254_i64);
        assert_eq!(data["resolved"][1]["avgDuration"], JsonValue::Null);
        assert!(data["resolvedNodes"][0]["percentiles"]["p99"].as_f64().unwrap() > 0.0, "{data}");
        assert_eq!(data["resolvedNodes"][1]["percentiles"]["p50"], JsonValue::Null);
    }
}
