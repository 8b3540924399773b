//! Time travel: the workflow as it was at a moment, and a session's execution timeline.
//!
//! Every figure counts only rows with time <= `at`, so nothing from later leaks into the past.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use entity::{session, trace};
use uuid::Uuid;

use super::traces::TRACE_COLUMNS;
use super::{Sql, Store, StoreError, StoreResult};
use crate::domain::SessionStatus;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Idle,
    Running,
    Completed,
    Failed,
}

#[derive(Clone, Debug)]
pub struct NodeState {
    pub node_id: String,
    pub node_name: Option<String>,
    pub status: NodeStatus,
    pub input_count: i64,
    pub output_count: i64,
    pub last_input: Option<trace::Model>,
    pub last_output: Option<trace::Model>,
    /// The latest failed trace the node emitted.
    pub last_error: Option<trace::Model>,
}

#[derive(Clone, Debug)]
pub struct WorkflowState {
    pub at: DateTime<Utc>,
    pub session: session::Model,
    pub session_status: SessionStatus,
    pub nodes: Vec<NodeState>,
}

/// Per node and direction, from one pass over the session's traces up to `at`.
#[derive(sea_orm::FromQueryResult)]
struct Flow {
    node: String,
    outgoing: bool,
    n: i64,
    name: Option<String>,
    /// `seq` of the latest trace (by timestamp, then seq) in this direction.
    last_seq: i64,
    last_error_seq: Option<i64>,
}

#[derive(sea_orm::FromQueryResult)]
struct NodeEvent {
    node_id: String,
    last_lifecycle: Option<String>,
}

impl Store {
    /// The session running at `at` (else the latest started before it) and each of its nodes as of `at`; `None`
    /// when the workflow had no session by then.
    pub async fn workflow_state_at(&self, workflow_id: &str, at: DateTime<Utc>) -> StoreResult<Option<WorkflowState>> {
        // flow_trace_sessions_workflow_idx (workflow_id, start_time DESC) bounds the scan to the workflow.
        let mut sql = Sql::new(
            "SELECT id, start_time, workflow_id, workflow_version_id, workflow_name, user_id, end_time, status,
                total_traces, success_count, error_count, warning_count, total_data_size, total_duration, timed_traces,
                metadata, created_at, updated_at
             FROM flow_trace_sessions WHERE workflow_id = ",
        );
        let (w, a) = (sql.bind(workflow_id.to_owned()), sql.bind(at));
        sql.push(&format!(
            "{w} AND start_time <= {a}
             ORDER BY (end_time IS NULL OR end_time > {a}) DESC, start_time DESC, id DESC LIMIT 1"
        ));
        let Some(session) = self.all::<session::Model>(sql).await?.into_iter().next() else { return Ok(None) };
        let session_status = match session.end_time {
            Some(end) if end <= at => SessionStatus::parse(&session.status).unwrap_or(SessionStatus::Completed),
            _ => SessionStatus::Running,
        };

        // One scan of the session's traces up to `at` (flow_traces_session_idx), each trace counted once as the
        // target's input and once as the source's output. Arrays compare element-wise, so max(ARRAY[time, seq])
        // is the latest trace.
        let mut sql = Sql::new(
            "WITH t AS (SELECT timestamp, seq, status, source_node_id, source_node_name,
                target_node_id, target_node_name FROM flow_traces WHERE session_id = ",
        );
        let (s, a) = (sql.bind(session.id), sql.bind(at));
        sql.push(&format!(
            "{s} AND timestamp <= {a}),
            io AS (
                SELECT target_node_id AS node, false AS outgoing, target_node_name AS name, timestamp, seq, status FROM t
                UNION ALL
                SELECT source_node_id, true, source_node_name, timestamp, seq, status FROM t
            )
            SELECT node, outgoing, count(*) AS n, max(name) AS name,
                (max(ARRAY[(extract(epoch FROM timestamp) * 1000000)::bigint, seq]))[2] AS last_seq,
                (max(ARRAY[(extract(epoch FROM timestamp) * 1000000)::bigint, seq])
                    FILTER (WHERE status = 'ERROR'))[2] AS last_error_seq
            FROM io GROUP BY node, outgoing"
        ));
        let flows: Vec<Flow> = self.all(sql).await?;

        // Lifecycle events decide a node's status when there are any (flow_trace_events_session_idx).
        let mut sql = Sql::new(
            "SELECT node_id, (array_agg(event_type ORDER BY timestamp DESC, seq DESC)
                FILTER (WHERE event_type IN ('START', 'COMPLETE', 'ERROR')))[1] AS last_lifecycle
             FROM flow_trace_events WHERE session_id = ",
        );
        let (s, a) = (sql.bind(session.id), sql.bind(at));
        sql.push(&format!("{s} AND timestamp <= {a} GROUP BY node_id"));
        let events: Vec<NodeEvent> = self.all(sql).await?;

        let mut wanted: Vec<i64> = flows.iter().map(|f| f.last_seq).collect();
        wanted.extend(flows.iter().filter_map(|f| f.last_error_seq));
        let traces = self.traces_by_seq(session.id, wanted).await?;

        let mut nodes: BTreeMap<String, NodeState> = BTreeMap::new();
        let blank = |id: &str| NodeState {
            node_id: id.to_owned(),
            node_name: None,
            status: NodeStatus::Idle,
            input_count: 0,
            output_count: 0,
            last_input: None,
            last_output: None,
            last_error: None,
        };
        for f in flows {
            let node = nodes.entry(f.node.clone()).or_insert_with(|| blank(&f.node));
            node.node_name = node.node_name.take().or(f.name);
            let last = traces.get(&f.last_seq).cloned();
            if f.outgoing {
                node.output_count = f.n;
                node.last_output = last;
                node.last_error = f.last_error_seq.and_then(|seq| traces.get(&seq).cloned());
            } else {
                node.input_count = f.n;
                node.last_input = last;
            }
        }
        let lifecycle: HashMap<String, Option<String>> =
            events.into_iter().map(|e| (e.node_id, e.last_lifecycle)).collect();
        for id in lifecycle.keys() {
            nodes.entry(id.clone()).or_insert_with(|| blank(id));
        }
        for node in nodes.values_mut() {
            node.status = match lifecycle.get(&node.node_id).and_then(|l| l.as_deref()) {
                Some("START") => NodeStatus::Running,
                Some("COMPLETE") => NodeStatus::Completed,
                Some("ERROR") => NodeStatus::Failed,
                _ => status_from_traces(node),
            };
        }
        Ok(Some(WorkflowState { at, session, session_status, nodes: nodes.into_values().collect() }))
    }

    async fn traces_by_seq(&self, session_id: Uuid, seqs: Vec<i64>) -> StoreResult<HashMap<i64, trace::Model>> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let mut sql = Sql::new(&format!("SELECT {TRACE_COLUMNS} FROM flow_traces WHERE session_id = "));
        let (s, q) = (sql.bind(session_id), sql.bind(seqs));
        // flow_traces_session_seq_idx (session_id, seq).
        sql.push(&format!("{s} AND seq = ANY({q})"));
        let rows: Vec<trace::Model> = self.all(sql).await?;
        Ok(rows.into_iter().map(|t| (t.seq, t)).collect())
    }
}

/// DESIGN §4: the latest emitted trace failed ⇒ FAILED; input newer than the latest output ⇒ RUNNING; some output ⇒
/// COMPLETED; otherwise IDLE.
fn status_from_traces(node: &NodeState) -> NodeStatus {
    let key = |t: &trace::Model| (t.timestamp, t.seq);
    match (&node.last_input, &node.last_output) {
        (_, Some(out)) if out.status == "ERROR" => NodeStatus::Failed,
        (Some(input), Some(out)) if key(input) > key(out) => NodeStatus::Running,
        (Some(_), None) => NodeStatus::Running,
        (_, Some(_)) => NodeStatus::Completed,
        (None, None) => NodeStatus::Idle,
    }
}

/// One bucket of a session's execution timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineBucket {
    pub bucket: DateTime<Utc>,
    pub trace_count: i64,
    pub error_count: i64,
    pub avg_duration: Option<f64>,
    pub max_duration: Option<f64>,
    pub data_size: i64,
    pub active_nodes: i64,
}

#[derive(sea_orm::FromQueryResult)]
struct TimelineRow {
    bucket: DateTime<Utc>,
    trace_count: Option<i64>,
    error_count: Option<i64>,
    avg_duration: Option<f64>,
    max_duration: Option<f64>,
    data_size: Option<i64>,
    sources: Option<Vec<String>>,
    targets: Option<Vec<String>>,
}

pub const MAX_TIMELINE_BUCKETS: i64 = 10_000;

/// `time_bucket`'s default origin for sub-month widths; plain mode aligns to the same so both modes agree.
const ORIGIN: &str = "TIMESTAMPTZ '2000-01-03 00:00:00+00'";

impl Store {
    /// Gap-filled buckets of `bucket_seconds` over `[from, to]` (default: the session's start to its end, or now).
    pub async fn execution_timeline(
        &self,
        session_id: Uuid,
        bucket_seconds: i64,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<TimelineBucket>> {
        if bucket_seconds <= 0 {
            return Err(StoreError::BadInput(format!("bucketSeconds must be > 0, got {bucket_seconds}")));
        }
        let session = self
            .session(session_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("session {session_id} does not exist")))?;
        let from = from.unwrap_or(session.start_time);
        let to = to.or(session.end_time).unwrap_or_else(Utc::now);
        super::traces::check_range(Some(from), Some(to))?;
        let buckets = (to - from).num_seconds() / bucket_seconds + 2;
        if buckets > MAX_TIMELINE_BUCKETS {
            return Err(StoreError::LimitExceeded(format!(
                "the timeline would have about {buckets} buckets; the limit is {MAX_TIMELINE_BUCKETS}: use larger buckets or a shorter range"
            )));
        }
        let timescaledb = self.mode().await?.is_timescaledb();
        let mut sql = Sql::new("");
        let (s, w, f, t) = (sql.bind(session_id), sql.bind(bucket_seconds as f64), sql.bind(from), sql.bind(to));
        let aggregates = "count(*) AS trace_count, count(*) FILTER (WHERE status = 'ERROR') AS error_count,
            avg(duration) AS avg_duration, max(duration) AS max_duration, sum(data_size)::bigint AS data_size,
            array_agg(DISTINCT source_node_id) AS sources, array_agg(DISTINCT target_node_id) AS targets";
        // flow_traces_session_idx (session_id, timestamp, seq) serves the range.
        let text = if timescaledb {
            format!(
                "SELECT time_bucket_gapfill(make_interval(secs => {w}), timestamp, {f}, {t} + INTERVAL '1 microsecond')
                    AS bucket, {aggregates}
                 FROM flow_traces WHERE session_id = {s} AND timestamp >= {f} AND timestamp <= {t}
                 GROUP BY 1 ORDER BY 1"
            )
        } else {
            let bucket_of = |x: &str| {
                format!(
                    "{ORIGIN} + floor(extract(epoch FROM ({x} - {ORIGIN})) / {w})::float8 * make_interval(secs => {w})"
                )
            };
            format!(
                "WITH agg AS (
                    SELECT {} AS bucket, {aggregates}
                    FROM flow_traces WHERE session_id = {s} AND timestamp >= {f} AND timestamp <= {t} GROUP BY 1),
                 series AS (SELECT generate_series({}, {t}, make_interval(secs => {w})) AS bucket)
                 SELECT series.bucket, agg.trace_count, agg.error_count, agg.avg_duration, agg.max_duration,
                    agg.data_size, agg.sources, agg.targets
                 FROM series LEFT JOIN agg USING (bucket) ORDER BY 1",
                bucket_of("timestamp"),
                bucket_of(&f)
            )
        };
        sql.push(&text);
        let rows: Vec<TimelineRow> = self.all(sql).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut nodes: Vec<String> = r.sources.unwrap_or_default();
                nodes.extend(r.targets.unwrap_or_default());
                nodes.sort();
                nodes.dedup();
                TimelineBucket {
                    bucket: r.bucket,
                    trace_count: r.trace_count.unwrap_or(0),
                    error_count: r.error_count.unwrap_or(0),
                    avg_duration: r.avg_duration,
                    max_duration: r.max_duration,
                    data_size: r.data_size.unwrap_or(0),
                    active_nodes: nodes.len() as i64,
                }
            })
            .collect())
    }
}
