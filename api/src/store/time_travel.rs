//! Time travel: the workflow as it was at a moment, and a session's execution timeline.
//!
//! Every figure counts only rows with time <= `at`, so nothing from later leaks into the past; or, for live state,
//! only the rows up to a mark in commit order (`RowMark`).

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use entity::{session, trace};

use super::sessions::SESSION_COLUMNS;
use super::traces::TRACE_COLUMNS;
use super::{Sql, Store, StoreError, StoreResult};
use crate::domain::{EventType, SessionStatus, TraceStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Idle,
    Running,
    Completed,
    Failed,
    Cancelled,
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

/// A prefix of a session's rows in commit order: its traces and events up to these `seq`s, and whether its end had
/// been committed. Within a workflow `seq` follows commit order (ingest draws it under the workflow's lock), so a
/// mark read in one statement names exactly what had committed then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowMark {
    pub traces: i64,
    pub events: i64,
    pub ended: bool,
}

/// What a state is computed from: the rows up to a moment, or a prefix of the rows in commit order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    At(DateTime<Utc>),
    Rows(RowMark),
}

#[derive(Clone, Debug)]
pub struct WorkflowState {
    pub at: DateTime<Utc>,
    pub session: session::Model,
    pub session_status: SessionStatus,
    pub nodes: Vec<NodeState>,
}

/// One node seen in the session up to `at`: its counts, the times of its latest input, output and failed output, and
/// its latest lifecycle event.
#[derive(sqlx::FromRow)]
struct NodeRow {
    node: String,
    input_count: i64,
    output_count: i64,
    last_input_at: Option<DateTime<Utc>>,
    last_output_at: Option<DateTime<Utc>>,
    last_error_at: Option<DateTime<Utc>>,
    last_lifecycle: Option<EventType>,
}

impl Store {
    /// The session running at `at` (the latest started when several ran; else the latest started before it) and
    /// each of its nodes as of `at`; `None` when the workflow had no session by then.
    pub async fn workflow_state_at(&self, workflow_id: &str, at: DateTime<Utc>) -> StoreResult<Option<WorkflowState>> {
        // flow_trace_sessions_workflow_idx (workflow_id, start_time DESC) bounds the scan to the workflow.
        let mut sql = Sql::new(&format!("SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE workflow_id = "));
        let (w, a) = (sql.bind(workflow_id.to_owned()), sql.bind(at));
        sql.push(&format!(
            "{w} AND start_time <= {a}
             ORDER BY (end_time IS NULL OR end_time > {a}) DESC, start_time DESC, id DESC LIMIT 1"
        ));
        let Some(session) = self.all::<session::Model>(sql).await?.into_iter().next() else { return Ok(None) };
        Ok(Some(self.state_as_of(session, AsOf::At(at)).await?))
    }

    /// One session and each of its nodes as of `at`: NOT_FOUND for an unknown session, `None` when it had not
    /// started by `at`.
    pub async fn session_state_at(&self, session_id: &str, at: DateTime<Utc>) -> StoreResult<Option<WorkflowState>> {
        let session = self
            .session(session_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("session {session_id} does not exist")))?;
        if session.start_time > at {
            return Ok(None);
        }
        Ok(Some(self.state_as_of(session, AsOf::At(at)).await?))
    }

    /// The sessions of a workflow running at `at` (started by then, not ended by then), latest started first.
    pub async fn running_sessions(
        &self,
        workflow_id: &str,
        at: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<session::Model>> {
        // flow_trace_sessions_workflow_idx (workflow_id, start_time DESC).
        let mut sql = Sql::new(&format!("SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE workflow_id = "));
        let (w, a, l) = (sql.bind(workflow_id.to_owned()), sql.bind(at), sql.bind(limit));
        sql.push(&format!(
            "{w} AND start_time <= {a} AND (end_time IS NULL OR end_time > {a})
             ORDER BY start_time DESC, id DESC LIMIT {l}"
        ));
        self.all(sql).await
    }

    /// The current mark of a session's rows and the session itself, read in one statement (one snapshot); `None` for
    /// an unknown session. Uses flow_traces_session_seq_idx and its events twin (`session_id, seq`).
    pub async fn row_mark(&self, session_id: &str) -> StoreResult<Option<(RowMark, session::Model)>> {
        #[derive(sqlx::FromRow)]
        struct Marked {
            #[sqlx(flatten)]
            session: session::Model,
            max_trace: i64,
            max_event: i64,
        }
        let mut sql = Sql::new(&format!(
            "SELECT {SESSION_COLUMNS},
                COALESCE((SELECT max(seq) FROM flow_traces t WHERE t.session_id = s.id), 0) AS max_trace,
                COALESCE((SELECT max(seq) FROM flow_trace_events e WHERE e.session_id = s.id), 0) AS max_event
             FROM flow_trace_sessions s WHERE id = "
        ));
        let p = sql.bind(session_id.to_owned());
        sql.push(&p);
        let Some(m) = self.all::<Marked>(sql).await?.into_iter().next() else { return Ok(None) };
        let ended = m.session.end_time.is_some() || m.session.status != SessionStatus::Running;
        Ok(Some((RowMark { traces: m.max_trace, events: m.max_event, ended }, m.session)))
    }

    /// A session and each of its nodes as of a moment or a row mark, by the rules of `NodeStatus`.
    pub async fn state_as_of(&self, session: session::Model, as_of: AsOf) -> StoreResult<WorkflowState> {
        let (at, ended) = match as_of {
            AsOf::At(at) => (at, session.end_time.is_some_and(|end| end <= at)),
            AsOf::Rows(mark) => (Utc::now(), mark.ended),
        };
        let session_status = if ended { session.status } else { SessionStatus::Running };

        // Every node seen, with its counts and the time of its latest input, output and failed output. As of a
        // moment, those come from the whole minutes before it in flow_trace_node_minutes plus the raw traces of its
        // own minute, so nothing grows with the number of traces in the session (migration m20261124_000006); as of
        // a row mark, from the traces up to the mark. The latest traces are then read by those exact times in a
        // second statement (`traces_at`, migration m20261206_000015); the latest lifecycle event is one backward step
        // on flow_trace_events_session_node_idx.
        let mut sql = Sql::new("");
        let s = sql.bind(session.id.clone());
        let (events_until, tail, minutes) = match as_of {
            AsOf::At(at) => {
                let minute =
                    at.duration_trunc(TimeDelta::minutes(1)).map_err(|e| StoreError::BadInput(e.to_string()))?;
                let (a, m) = (sql.bind(at), sql.bind(minute));
                let minutes = format!(
                    "UNION ALL SELECT node_id, inputs, outputs, last_input_at, last_output_at, last_error_at
                     FROM flow_trace_node_minutes WHERE session_id = {s} AND minute < {m}"
                );
                (format!("timestamp <= {a}"), format!("timestamp >= {m} AND timestamp <= {a}"), minutes)
            }
            AsOf::Rows(mark) => {
                let (t, e) = (sql.bind(mark.traces), sql.bind(mark.events));
                (format!("seq <= {e}"), format!("seq <= {t}"), String::new())
            }
        };
        sql.push(&format!(
            "WITH tail AS (
                SELECT timestamp, status, source_node_id, target_node_id FROM flow_traces
                WHERE session_id = {s} AND {tail}
            ), counts AS (
                SELECT node, sum(inputs)::bigint AS inputs, sum(outputs)::bigint AS outputs,
                    max(last_input_at) AS last_input_at, max(last_output_at) AS last_output_at,
                    max(last_error_at) AS last_error_at
                FROM (
                    SELECT target_node_id AS node, 1 AS inputs, 0 AS outputs, timestamp AS last_input_at,
                        NULL::timestamptz AS last_output_at, NULL::timestamptz AS last_error_at
                    FROM tail
                    UNION ALL SELECT source_node_id, 0, 1, NULL, timestamp, CASE WHEN status = 'ERROR' THEN timestamp END
                    FROM tail
                    {minutes}
                ) c GROUP BY node
            ), reported AS (
                SELECT DISTINCT node_id AS node FROM flow_trace_events WHERE session_id = {s} AND {events_until}
            ), nodes AS (
                SELECT node FROM counts UNION SELECT node FROM reported
            )
            SELECT n.node, COALESCE(c.inputs, 0) AS input_count, COALESCE(c.outputs, 0) AS output_count,
                c.last_input_at, c.last_output_at, c.last_error_at,
                (SELECT event_type FROM flow_trace_events
                 WHERE session_id = {s} AND node_id = n.node AND {events_until}
                    AND event_type IN ('START', 'COMPLETE', 'ERROR')
                 -- At one instant an ERROR outranks the other lifecycle events (rule 1 of `NodeStatus`).
                 ORDER BY timestamp DESC, event_type = 'ERROR' DESC, seq DESC LIMIT 1) AS last_lifecycle
            FROM nodes n LEFT JOIN counts c USING (node) ORDER BY n.node"
        ));
        let rows: Vec<NodeRow> = self.all(sql).await?;
        let times = rows.iter().flat_map(|r| [r.last_input_at, r.last_output_at, r.last_error_at]).flatten();
        let up_to = match as_of {
            AsOf::At(_) => None,
            AsOf::Rows(mark) => Some(mark.traces),
        };
        let mut traces: HashMap<DateTime<Utc>, Vec<trace::Model>> = HashMap::new();
        for t in self.traces_at(&session.id, times.collect(), up_to).await? {
            traces.entry(t.timestamp).or_default().push(t);
        }
        // The latest of the traces at `at` that `matches`: the one written last.
        let latest = |at: Option<DateTime<Utc>>, matches: &dyn Fn(&trace::Model) -> bool| {
            traces.get(&at?)?.iter().filter(|t| matches(t)).max_by_key(|t| t.seq).cloned()
        };

        let nodes = rows
            .into_iter()
            .map(|r| {
                let mut node = NodeState {
                    node_name: None,
                    status: NodeStatus::Idle,
                    input_count: r.input_count,
                    output_count: r.output_count,
                    last_input: latest(r.last_input_at, &|t| t.target_node_id == r.node),
                    last_output: latest(r.last_output_at, &|t| t.source_node_id == r.node),
                    last_error: latest(r.last_error_at, &|t| {
                        t.source_node_id == r.node && t.status == TraceStatus::Error
                    }),
                    node_id: r.node,
                };
                node.node_name = name_from_latest(&node);
                node.status = match r.last_lifecycle {
                    Some(EventType::Start) => NodeStatus::Running,
                    Some(EventType::Complete) => NodeStatus::Completed,
                    Some(EventType::Error) => NodeStatus::Failed,
                    _ => status_from_traces(&node),
                };
                // Rule 3: once the session has ended, nothing in it runs.
                if node.status == NodeStatus::Running {
                    node.status = match session_status {
                        SessionStatus::Running => NodeStatus::Running,
                        SessionStatus::Completed => NodeStatus::Completed,
                        SessionStatus::Failed => NodeStatus::Failed,
                        SessionStatus::Cancelled => NodeStatus::Cancelled,
                    };
                }
                node
            })
            .collect();
        Ok(WorkflowState { at, session, session_status, nodes })
    }

    /// The session's traces at exactly these times (up to `seq` `up_to`, when given). One statement whose times are
    /// known when it is planned, so only their chunks are read, each by flow_traces_session_idx.
    async fn traces_at(
        &self,
        session_id: &str,
        mut times: Vec<DateTime<Utc>>,
        up_to: Option<i64>,
    ) -> StoreResult<Vec<trace::Model>> {
        if times.is_empty() {
            return Ok(Vec::new());
        }
        times.sort_unstable();
        times.dedup();
        let mut sql = Sql::new(&format!("SELECT {TRACE_COLUMNS} FROM flow_traces WHERE session_id = "));
        let (s, t) = (sql.bind(session_id), sql.bind(times));
        sql.push(&format!("{s} AND timestamp = ANY({t})"));
        if let Some(up_to) = up_to {
            let u = sql.bind(up_to);
            sql.push(&format!(" AND seq <= {u}"));
        }
        self.all(sql).await
    }
}

/// The name the node had in its latest trace, on whichever side of it it was.
fn name_from_latest(node: &NodeState) -> Option<String> {
    let as_target = node.last_input.as_ref().map(|t| ((t.timestamp, t.seq), &t.target_node_name));
    let as_source = node.last_output.as_ref().map(|t| ((t.timestamp, t.seq), &t.source_node_name));
    as_target.into_iter().chain(as_source).max_by_key(|(key, _)| *key).and_then(|(_, name)| name.clone())
}

/// DESIGN §4: the latest emitted trace failed ⇒ FAILED; input newer than the latest output ⇒ RUNNING; some output ⇒
/// COMPLETED; otherwise IDLE.
fn status_from_traces(node: &NodeState) -> NodeStatus {
    let key = |t: &trace::Model| (t.timestamp, t.seq);
    match (&node.last_input, &node.last_output) {
        (_, Some(out)) if out.status == TraceStatus::Error => NodeStatus::Failed,
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

#[derive(sqlx::FromRow)]
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
        session_id: &str,
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
