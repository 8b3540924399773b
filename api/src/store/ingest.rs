//! Writes: sessions, and traces and events in bulk.
//!
//! A batch is validated whole before anything is written, then stored by one INSERT over UNNEST-ed arrays in one
//! transaction with the session summary update and one `pg_notify` wake-up: all or nothing. Ids are the idempotency
//! keys: an id already stored in the session is skipped whatever its timestamp and reported as a duplicate, so a
//! retried batch stores nothing twice. The check probes the key `(session_id, id, timestamp)` once per item, only
//! within the time span the session's rows already cover (on TimescaleDB, only in the chunks of that span: probing
//! every chunk costs more than the insert); the per-workflow lock below makes it safe against a concurrent batch of
//! the same session.
//!
//! Ordering: the transaction takes an advisory lock on the session's workflow before it draws `seq` values, so within
//! a workflow (and so within a session) `seq` order is commit order and a reader following `seq` never skips a row
//! that commits late.

use std::collections::HashSet;

use super::ids::{check_id, generate_id};
use super::{Store, StoreError, StoreResult};
use crate::domain::{EventType, TraceStatus};
use crate::limits::Limits;
use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{Postgres, Transaction};

/// The NOTIFY channel; the payload is `live::Wakeup` as JSON.
pub const CHANNEL: &str = "flowtrace";

#[derive(Clone, Debug, Default)]
pub struct NodeRef {
    pub node_id: String,
    pub node_name: Option<String>,
    pub node_type: Option<String>,
    pub port_id: Option<String>,
    pub port_name: Option<String>,
    pub port_type: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NewTrace {
    pub id: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub duration: Option<f64>,
    pub status: TraceStatus,
    pub source: NodeRef,
    pub target: NodeRef,
    pub payload: Option<Json>,
    pub size: Option<i64>,
    pub data_type: Option<String>,
    pub preview: Option<String>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    pub error_stack: Option<String>,
    pub graph_id: Option<String>,
    pub graph_name: Option<String>,
    pub parent_trace_id: Option<String>,
    pub depth: Option<i32>,
}

#[derive(Clone, Debug)]
pub struct NewEvent {
    pub id: Option<String>,
    pub node_id: String,
    pub port_id: Option<String>,
    pub event_type: EventType,
    pub timestamp: DateTime<Utc>,
    pub data: Option<Json>,
    pub duration: Option<f64>,
    pub metadata: Option<Json>,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub accepted: i64,
    pub duplicates: i64,
}

/// Checks one batch item by item; errors name the item (`traces[3].duration`) so a client can fix it.
pub(crate) struct Checker<'a> {
    pub limits: &'a Limits,
    pub list: &'static str,
}

impl Checker<'_> {
    pub fn batch(&self, len: usize) -> StoreResult<()> {
        if len == 0 {
            return Err(StoreError::BadInput(format!("{} must not be empty", self.list)));
        }
        if len > self.limits.max_batch {
            return Err(StoreError::LimitExceeded(format!(
                "{} has {len} items; the limit (max_batch) is {} per call: split the batch",
                self.list, self.limits.max_batch
            )));
        }
        Ok(())
    }

    pub fn name(&self, i: usize, field: &str, value: Option<&str>, required: bool) -> StoreResult<()> {
        check_name(self.limits, || format!("{}[{i}].{field}", self.list), value, required)
    }

    pub fn text(&self, i: usize, field: &str, value: Option<&str>) -> StoreResult<()> {
        match value {
            Some(v) if v.chars().count() > self.limits.max_text_chars => Err(StoreError::LimitExceeded(format!(
                "{}[{i}].{field} is longer than {} characters (max_text_chars)",
                self.list, self.limits.max_text_chars
            ))),
            _ => Ok(()),
        }
    }

    pub fn time(&self, i: usize, field: &str, at: DateTime<Utc>) -> StoreResult<()> {
        check_time(at).map_err(|why| StoreError::BadInput(format!("{}[{i}].{field} {why}", self.list)))
    }

    pub fn duration(&self, i: usize, value: Option<f64>) -> StoreResult<()> {
        match value {
            Some(d) if !d.is_finite() || d < 0.0 => Err(StoreError::BadInput(format!(
                "{}[{i}].duration must be a finite number of milliseconds >= 0, got {d}",
                self.list
            ))),
            _ => Ok(()),
        }
    }

    /// Serialises JSON once, checking its size and nesting.
    pub fn json(&self, i: usize, field: &str, value: Option<&Json>) -> StoreResult<Option<String>> {
        let Some(value) = value else { return Ok(None) };
        if json_depth(value) > self.limits.max_json_depth {
            return Err(StoreError::LimitExceeded(format!(
                "{}[{i}].{field} nests deeper than {} levels (max_json_depth)",
                self.list, self.limits.max_json_depth
            )));
        }
        let text = value.to_string();
        if text.len() > self.limits.max_payload_bytes {
            return Err(StoreError::LimitExceeded(format!(
                "{}[{i}].{field} is {} bytes of JSON; the limit (max_payload_bytes) is {}",
                self.list,
                text.len(),
                self.limits.max_payload_bytes
            )));
        }
        Ok(Some(text))
    }

    /// Each given id keeps the id rule and appears once in the batch.
    pub fn ids<'a>(&self, ids: impl Iterator<Item = Option<&'a str>>) -> StoreResult<()> {
        let mut seen = HashSet::new();
        for (i, id) in ids.enumerate() {
            let Some(id) = id else { continue };
            check_id(|| format!("{}[{i}].id", self.list), id)?;
            if !seen.insert(id) {
                return Err(StoreError::BadInput(format!("{}[{i}].id {id} appears twice in this batch", self.list)));
            }
        }
        Ok(())
    }
}

/// The rule for identifiers and names: bounded length, and not blank when required. `label` names the field in the
/// error and is only built when there is one.
pub(crate) fn check_name(
    limits: &Limits,
    label: impl Fn() -> String,
    value: Option<&str>,
    required: bool,
) -> StoreResult<()> {
    match value {
        Some(v) if v.chars().count() > limits.max_name_chars => Err(StoreError::LimitExceeded(format!(
            "{} is longer than {} characters (max_name_chars)",
            label(),
            limits.max_name_chars
        ))),
        Some(v) if required && v.trim().is_empty() => {
            Err(StoreError::BadInput(format!("{} must not be empty", label())))
        }
        None if required => Err(StoreError::BadInput(format!("{} is required", label()))),
        _ => Ok(()),
    }
}

/// Timestamps outside 2000–2100 are taken as client bugs (seconds sent as milliseconds, zero dates).
pub fn check_time(at: DateTime<Utc>) -> Result<(), String> {
    let lo = DateTime::from_timestamp(946_684_800, 0).unwrap_or_default(); // 2000-01-01
    let hi = DateTime::from_timestamp(4_102_444_800, 0).unwrap_or_default(); // 2100-01-01
    if at < lo || at >= hi {
        return Err(format!("{} is outside the accepted range 2000-01-01..2100-01-01", at.to_rfc3339()));
    }
    Ok(())
}

pub(crate) fn json_depth(value: &Json) -> usize {
    // Iterative, so a hostile payload cannot overflow the stack here.
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match v {
            Json::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Json::Object(map) => stack.extend(map.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// The session's workflow, or NOT_FOUND.
async fn session_workflow(tx: &mut Transaction<'_, Postgres>, session_id: &str) -> StoreResult<String> {
    // flow_trace_sessions_pkey (id, start_time) finds it in every chunk.
    let row: Option<(String,)> = sqlx::query_as("SELECT workflow_id FROM flow_trace_sessions WHERE id = $1 LIMIT 1")
        .bind(session_id)
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| r.0).ok_or_else(|| StoreError::NotFound(format!("session {session_id} does not exist")))
}

/// Serialises ingest per workflow until commit (see the module comment).
async fn lock_workflow(tx: &mut Transaction<'_, Postgres>, workflow_id: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('flowtrace:' || $1, 0))")
        .bind(workflow_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The ids of `ids` this session already holds, whatever their timestamps. One statement, one probe of the
/// primary key (session_id, id, timestamp) per chunk for the whole batch; the per-workflow lock taken before makes
/// the answer hold until commit.
async fn stored_ids(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    session_id: &str,
    ids: &[String],
) -> StoreResult<Vec<String>> {
    // The table name is ours, never a client's.
    let sql = format!("SELECT id FROM {table} WHERE session_id = $1 AND id = ANY($2::text[])");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(session_id).bind(ids).fetch_all(&mut **tx).await?)
}

/// One small wake-up per transaction; listeners read the rows themselves.
pub(crate) async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    session_id: &str,
    workflow_id: &str,
    seq: i64,
) -> StoreResult<()> {
    let payload = serde_json::json!({ "k": kind, "s": session_id, "w": workflow_id, "q": seq }).to_string();
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(&mut **tx).await?;
    Ok(())
}

impl Store {
    pub async fn record_traces(
        &self,
        limits: &Limits,
        session_id: &str,
        mut traces: Vec<NewTrace>,
    ) -> StoreResult<Recorded> {
        check_id(|| "sessionId".into(), session_id)?;
        let check = Checker { limits, list: "traces" };
        check.batch(traces.len())?;
        check.ids(traces.iter().map(|t| t.id.as_deref()))?;
        let mut payloads = Vec::with_capacity(traces.len());
        for (i, t) in traces.iter().enumerate() {
            if let Some(parent) = &t.parent_trace_id {
                check_id(|| format!("traces[{i}].parentTraceId"), parent)?;
            }
            check.time(i, "timestamp", t.timestamp)?;
            check.duration(i, t.duration)?;
            for (field, value, required) in [
                ("source.nodeId", Some(t.source.node_id.as_str()), true),
                ("target.nodeId", Some(t.target.node_id.as_str()), true),
                ("source.nodeName", t.source.node_name.as_deref(), false),
                ("source.nodeType", t.source.node_type.as_deref(), false),
                ("source.portId", t.source.port_id.as_deref(), false),
                ("source.portName", t.source.port_name.as_deref(), false),
                ("source.portType", t.source.port_type.as_deref(), false),
                ("target.nodeName", t.target.node_name.as_deref(), false),
                ("target.nodeType", t.target.node_type.as_deref(), false),
                ("target.portId", t.target.port_id.as_deref(), false),
                ("target.portName", t.target.port_name.as_deref(), false),
                ("target.portType", t.target.port_type.as_deref(), false),
                ("data.type", t.data_type.as_deref(), false),
                ("error.code", t.error_code.as_deref(), false),
                ("graphId", t.graph_id.as_deref(), false),
                ("graphName", t.graph_name.as_deref(), false),
            ] {
                check.name(i, field, value, required)?;
            }
            if t.graph_id.as_deref().is_some_and(|g| g.trim().is_empty()) {
                return Err(StoreError::BadInput(format!("traces[{i}].graphId must not be empty")));
            }
            check.text(i, "data.preview", t.preview.as_deref())?;
            check.text(i, "error.message", t.error_message.as_deref())?;
            check.text(i, "error.stack", t.error_stack.as_deref())?;
            if t.size.is_some_and(|s| s < 0) {
                return Err(StoreError::BadInput(format!("traces[{i}].data.size must be >= 0")));
            }
            if t.depth.is_some_and(|d| d < 0) {
                return Err(StoreError::BadInput(format!("traces[{i}].depth must be >= 0")));
            }
            payloads.push(check.json(i, "data.payload", t.payload.as_ref())?);
        }
        // Draw `seq` in time order so that, for clients that send in time order, seq order is time order too.
        let mut order: Vec<usize> = (0..traces.len()).collect();
        order.sort_by_key(|&i| traces[i].timestamp);
        let cols = TraceColumns::build(&mut traces, payloads, &order);
        let [s0, s1, s2, s3, s4, s5] = cols.source;
        let [t0, t1, t2, t3, t4, t5] = cols.target;

        let mut tx = self.pool.begin().await?;
        let workflow_id = session_workflow(&mut tx, session_id).await?;
        lock_workflow(&mut tx, &workflow_id).await?;
        let stored = stored_ids(&mut tx, "flow_traces", session_id, &cols.id).await?;
        let (accepted, max_seq): (i64, Option<i64>) = sqlx::query_as(
            r#"
            WITH ins AS (
                INSERT INTO flow_traces (
                    seq, session_id, workflow_id, id, timestamp, duration, status,
                    source_node_id, source_node_name, source_node_type, source_port_id, source_port_name, source_port_type,
                    target_node_id, target_node_name, target_node_type, target_port_id, target_port_name, target_port_type,
                    data_payload, data_size, data_type, data_preview, error_message, error_code, error_stack,
                    graph_id, graph_name, parent_trace_id, depth)
                SELECT nextval('flow_trace_seq'), $1, $2, u.id, u.ts, u.duration, u.status,
                    u.sn, u.snn, u.snt, u.sp, u.spn, u.spt, u.tn, u.tnn, u.tnt, u.tp, u.tpn, u.tpt,
                    u.payload::jsonb, u.size, u.dtype, u.preview, u.emsg, u.ecode, u.estack,
                    u.graph_id, u.graph_name, u.parent, u.depth
                FROM UNNEST($3::text[], $4::timestamptz[], $5::float8[], $6::text[],
                    $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
                    $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
                    $19::text[], $20::int8[], $21::text[], $22::text[], $23::text[], $24::text[], $25::text[],
                    $26::text[], $27::text[], $28::text[], $29::int4[])
                    AS u(id, ts, duration, status, sn, snn, snt, sp, spn, spt, tn, tnn, tnt, tp, tpn, tpt,
                         payload, size, dtype, preview, emsg, ecode, estack, graph_id, graph_name, parent, depth)
                -- An id is stored once per session, whatever its timestamp ($30: the ones it already holds).
                WHERE u.id <> ALL($30::text[])
                ON CONFLICT DO NOTHING
                RETURNING seq, status, data_size, duration, timestamp, source_node_id, target_node_id
            ),
            agg AS (
                SELECT count(*) AS n,
                    count(*) FILTER (WHERE status = 'SUCCESS') AS ok,
                    count(*) FILTER (WHERE status = 'ERROR') AS err,
                    count(*) FILTER (WHERE status = 'WARNING') AS warn,
                    COALESCE(sum(data_size), 0) AS bytes,
                    COALESCE(sum(duration), 0) AS dur,
                    count(duration) AS timed,
                    max(seq) AS max_seq
                FROM ins
            ),
            upd AS (
                UPDATE flow_trace_sessions s SET
                    total_traces = s.total_traces + agg.n,
                    success_count = s.success_count + agg.ok,
                    error_count = s.error_count + agg.err,
                    warning_count = s.warning_count + agg.warn,
                    total_data_size = s.total_data_size + agg.bytes,
                    total_duration = s.total_duration + agg.dur,
                    timed_traces = s.timed_traces + agg.timed,
                    updated_at = now()
                FROM agg
                WHERE s.id = $1 AND agg.n > 0
                RETURNING 1
            ),
            -- Per node and minute, what workflowStateAt counts (migration m20261124_000006).
            minutes AS (
                INSERT INTO flow_trace_node_minutes AS m (session_id, node_id, minute, inputs, outputs)
                SELECT $1, node, minute, sum(inputs), sum(outputs) FROM (
                    SELECT target_node_id AS node, date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch') AS minute,
                        1 AS inputs, 0 AS outputs FROM ins
                    UNION ALL
                    SELECT source_node_id, date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch'), 0, 1 FROM ins
                ) t GROUP BY node, minute
                ON CONFLICT (session_id, node_id, minute) DO UPDATE
                    SET inputs = m.inputs + excluded.inputs, outputs = m.outputs + excluded.outputs
            )
            SELECT n, max_seq FROM agg, (SELECT count(*) FROM upd) AS updated
            "#,
        )
        .bind(session_id)
        .bind(&workflow_id)
        .bind(cols.id)
        .bind(cols.ts)
        .bind(cols.duration)
        .bind(cols.status)
        .bind(s0)
        .bind(s1)
        .bind(s2)
        .bind(s3)
        .bind(s4)
        .bind(s5)
        .bind(t0)
        .bind(t1)
        .bind(t2)
        .bind(t3)
        .bind(t4)
        .bind(t5)
        .bind(cols.payload)
        .bind(cols.size)
        .bind(cols.data_type)
        .bind(cols.preview)
        .bind(cols.error_message)
        .bind(cols.error_code)
        .bind(cols.error_stack)
        .bind(cols.graph_id)
        .bind(cols.graph_name)
        .bind(cols.parent)
        .bind(cols.depth)
        .bind(stored)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(seq) = max_seq {
            notify(&mut tx, "trace", session_id, &workflow_id, seq).await?;
        }
        tx.commit().await?;
        Ok(Recorded { accepted, duplicates: traces.len() as i64 - accepted })
    }

    pub async fn record_events(
        &self,
        limits: &Limits,
        session_id: &str,
        events: Vec<NewEvent>,
    ) -> StoreResult<Recorded> {
        check_id(|| "sessionId".into(), session_id)?;
        let check = Checker { limits, list: "events" };
        check.batch(events.len())?;
        check.ids(events.iter().map(|e| e.id.as_deref()))?;
        let mut data = Vec::with_capacity(events.len());
        let mut metadata = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            check.time(i, "timestamp", e.timestamp)?;
            check.duration(i, e.duration)?;
            check.name(i, "nodeId", Some(&e.node_id), true)?;
            check.name(i, "portId", e.port_id.as_deref(), false)?;
            data.push(check.json(i, "data", e.data.as_ref())?);
            metadata.push(check.json(i, "metadata", e.metadata.as_ref())?);
        }
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events[i].timestamp);
        let pick = |i: usize| &events[i];
        let ids: Vec<String> = order.iter().map(|&i| pick(i).id.clone().unwrap_or_else(generate_id)).collect();
        let ts: Vec<DateTime<Utc>> = order.iter().map(|&i| pick(i).timestamp).collect();
        let node: Vec<String> = order.iter().map(|&i| pick(i).node_id.clone()).collect();
        let port: Vec<Option<String>> = order.iter().map(|&i| pick(i).port_id.clone()).collect();
        let kind: Vec<&str> = order.iter().map(|&i| pick(i).event_type.as_str()).collect();
        let data: Vec<Option<String>> = order.iter().map(|&i| data[i].clone()).collect();
        let duration: Vec<Option<f64>> = order.iter().map(|&i| pick(i).duration).collect();
        let metadata: Vec<Option<String>> = order.iter().map(|&i| metadata[i].clone()).collect();

        let mut tx = self.pool.begin().await?;
        let workflow_id = session_workflow(&mut tx, session_id).await?;
        lock_workflow(&mut tx, &workflow_id).await?;
        let stored = stored_ids(&mut tx, "flow_trace_events", session_id, &ids).await?;
        let (accepted, max_seq): (i64, Option<i64>) = sqlx::query_as(
            r#"
            WITH ins AS (
                INSERT INTO flow_trace_events
                    (seq, session_id, workflow_id, id, timestamp, node_id, port_id, event_type, data, duration, metadata)
                SELECT nextval('flow_trace_event_seq'), $1, $2, u.id, u.ts, u.node, u.port, u.kind,
                    u.data::jsonb, u.duration, u.metadata::jsonb
                FROM UNNEST($3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[],
                    $9::float8[], $10::text[]) AS u(id, ts, node, port, kind, data, duration, metadata)
                WHERE u.id <> ALL($11::text[])
                ON CONFLICT DO NOTHING
                RETURNING seq
            )
            SELECT count(*), max(seq) FROM ins
            "#,
        )
        .bind(session_id)
        .bind(&workflow_id)
        .bind(ids)
        .bind(ts)
        .bind(node)
        .bind(port)
        .bind(kind)
        .bind(data)
        .bind(duration)
        .bind(metadata)
        .bind(stored)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(seq) = max_seq {
            notify(&mut tx, "event", session_id, &workflow_id, seq).await?;
        }
        tx.commit().await?;
        Ok(Recorded { accepted, duplicates: events.len() as i64 - accepted })
    }
}

/// A batch of traces as column arrays, in `seq` order.
struct TraceColumns {
    id: Vec<String>,
    ts: Vec<DateTime<Utc>>,
    duration: Vec<Option<f64>>,
    status: Vec<&'static str>,
    source: [Vec<Option<String>>; 6],
    target: [Vec<Option<String>>; 6],
    payload: Vec<Option<String>>,
    size: Vec<Option<i64>>,
    data_type: Vec<Option<String>>,
    preview: Vec<Option<String>>,
    error_message: Vec<Option<String>>,
    error_code: Vec<Option<String>>,
    error_stack: Vec<Option<String>>,
    graph_id: Vec<String>,
    graph_name: Vec<Option<String>>,
    parent: Vec<Option<String>>,
    depth: Vec<i32>,
}

impl TraceColumns {
    fn build(traces: &mut [NewTrace], mut payloads: Vec<Option<String>>, order: &[usize]) -> TraceColumns {
        let n = traces.len();
        let mut c = TraceColumns {
            id: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            source: Default::default(),
            target: Default::default(),
            payload: Vec::with_capacity(n),
            size: Vec::with_capacity(n),
            data_type: Vec::with_capacity(n),
            preview: Vec::with_capacity(n),
            error_message: Vec::with_capacity(n),
            error_code: Vec::with_capacity(n),
            error_stack: Vec::with_capacity(n),
            graph_id: Vec::with_capacity(n),
            graph_name: Vec::with_capacity(n),
            parent: Vec::with_capacity(n),
            depth: Vec::with_capacity(n),
        };
        for &i in order {
            let t = &mut traces[i];
            let payload = payloads[i].take();
            c.id.push(t.id.take().unwrap_or_else(generate_id));
            c.ts.push(t.timestamp);
            c.duration.push(t.duration);
            c.status.push(t.status.as_str());
            for (cols, node) in [(&mut c.source, &mut t.source), (&mut c.target, &mut t.target)] {
                cols[0].push(Some(std::mem::take(&mut node.node_id)));
                cols[1].push(node.node_name.take());
                cols[2].push(node.node_type.take());
                cols[3].push(node.port_id.take());
                cols[4].push(node.port_name.take());
                cols[5].push(node.port_type.take());
            }
            // Without a client-given size, the payload's JSON length is the best measure of what was passed.
            c.size.push(t.size.or(payload.as_ref().map(|p| p.len() as i64)));
            c.payload.push(payload);
            c.data_type.push(t.data_type.take());
            c.preview.push(t.preview.take());
            c.error_message.push(t.error_message.take());
            c.error_code.push(t.error_code.take());
            c.error_stack.push(t.error_stack.take());
            c.graph_id.push(t.graph_id.take().unwrap_or_else(|| "main".to_owned()));
            c.graph_name.push(t.graph_name.take());
            c.parent.push(t.parent_trace_id.take());
            c.depth.push(t.depth.unwrap_or(0));
        }
        c
    }
}
