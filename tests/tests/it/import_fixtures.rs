//! Sources for the `flowtrace import` tests: one history written in each layout (the replaced service's two, and
//! flowtrace's own through the ingest path), the GraphQL answers compared across them, and the real binary.

use chrono::{DateTime, Duration, Utc};
use flowtrace::config::ImportArgs;
use flowtrace::domain::{EventType, SessionStatus, TraceStatus};
use flowtrace::limits::Limits;
use flowtrace::store::Store;
use flowtrace::store::ingest::{NewEvent, NewTrace, NodeRef};
use flowtrace::store::sessions::NewSession;
use serde_json::{Value, json};

use crate::fixtures::t0;
use crate::harness::{TestApp, TestDb, empty_db};

pub const MAIN_DDL: &str = include_str!("../../fixtures/replaced_service_main.sql");
pub const MAIN_FILL: &str = include_str!("../../fixtures/replaced_service_main_fill.sql");
pub const TIMESCALE_DDL: &str = include_str!("../../fixtures/replaced_service_timescale.sql");

pub struct FxSession {
    pub id: &'static str,
    pub status: &'static str,
    pub start: i64,
    pub end: Option<i64>,
    pub execution_id: Option<&'static str>,
    pub traces: Vec<FxTrace>,
    pub events: Vec<(&'static str, &'static str, &'static str, i64)>,
}

pub struct FxTrace {
    pub id: &'static str,
    pub at: i64,
    pub ms: i32,
    pub status: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub payload: Option<&'static str>,
    pub parent: Option<&'static str>,
    pub error: Option<&'static str>,
}

pub const WORKFLOW: &str = "wf-orders";

fn trace(id: &'static str, at: i64, ms: i32, status: &'static str, from: &'static str, to: &'static str) -> FxTrace {
    FxTrace { id, at, ms, status, from, to, payload: Some(r#"{"rows": 3, "ok": true}"#), parent: None, error: None }
}

/// Three sessions of one workflow in the replaced service's id shapes: ended, failed (or cancelled where the layout
/// has it), still running; a subgraph trace pointing at its parent; traces across minute boundaries.
pub fn history(second_status: &'static str) -> Vec<FxSession> {
    vec![
        FxSession {
            id: "fts_mf3k2q1a_4h8z0c9xk2lq",
            status: "completed",
            start: 0,
            end: Some(100),
            execution_id: Some("exec-1"),
            traces: vec![
                trace("ft_mf3k2q1b_a1", 1, 120, "success", "fetch", "transform"),
                FxTrace {
                    parent: Some("ft_mf3k2q1b_a1"),
                    payload: Some("[1, 2, {\"deep\": \"x\\ty\"}]"),
                    ..trace("ft_mf3k2q1b_a2", 2, 80, "warning", "transform", "sub-a")
                },
                FxTrace {
                    error: Some("boom"),
                    payload: None,
                    ..trace("ft_mf3k2q1b_a3", 61, 40, "error", "sub-a", "load")
                },
                trace("ft_mf3k2q1b_a4", 62, 7, "success", "load", "done"),
            ],
            events: vec![("ev-1", "fetch", "start", 0), ("ev-2", "done", "complete", 99)],
        },
        FxSession {
            id: "fts_mf3k2q1c_7p",
            status: second_status,
            start: 200,
            end: Some(290),
            execution_id: None,
            traces: vec![
                trace("ft_mf3k2q1d_b1", 201, 10, "success", "fetch", "transform"),
                FxTrace { error: Some("late"), ..trace("ft_mf3k2q1d_b2", 275, 20, "error", "transform", "load") },
            ],
            events: vec![("ev-3", "load", "error", 276)],
        },
        FxSession {
            id: "fts_mf3k2q1e_run",
            status: "running",
            start: 400,
            end: None,
            execution_id: None,
            traces: vec![trace("ft_mf3k2q1f_c1", 401, 5, "success", "fetch", "transform")],
            events: vec![("ev-4", "fetch", "log", 402)],
        },
    ]
}

pub fn at(s: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(s)
}

pub async fn exec(store: &Store, sql: &str) {
    if let Err(err) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(store.pool()).await {
        panic!("{sql}: {err}");
    }
}

/// An empty database holding the given DDL.
pub async fn source_with(ddl: &str) -> TestDb {
    let db = empty_db().await;
    exec(&db.store, ddl).await;
    db
}

/// The history in the replaced service's main-database tables (timestamps written as UTC wall time).
pub async fn write_main(store: &Store, history: &[FxSession]) {
    exec(store, &format!("INSERT INTO workflows VALUES ('{WORKFLOW}', 'Orders') ON CONFLICT DO NOTHING")).await;
    for s in history {
        sqlx::query(
            r#"INSERT INTO flow_trace_sessions (id, "workflowId", "workflowVersionId", "workflowName", "startTime",
                "endTime", status, summary, "userId", "createdAt")
               VALUES ($1, $2, 'v1', 'Orders', $3::timestamptz AT TIME ZONE 'UTC', $4::timestamptz AT TIME ZONE 'UTC',
                $5, '{"totalTraces": 999, "successCount": 999}', 'alice', $3::timestamptz AT TIME ZONE 'UTC')"#,
        )
        .bind(s.id)
        .bind(WORKFLOW)
        .bind(at(s.start))
        .bind(s.end.map(at))
        .bind(s.status)
        .execute(store.pool())
        .await
        .expect("session row");
        for t in &s.traces {
            insert_main_trace(store, s.id, t).await;
        }
    }
}

pub async fn insert_main_trace(store: &Store, session: &str, t: &FxTrace) {
    sqlx::query(
        r#"INSERT INTO flow_traces (id, "sessionId", timestamp, duration, status, "sourceNodeId", "sourceNodeName",
            "sourceNodeType", "sourcePortId", "sourcePortName", "sourcePortType", "targetNodeId", "targetNodeName",
            "targetNodeType", "targetPortId", "targetPortName", "targetPortType", "dataPayload", "dataSize",
            "dataType", "errorMessage", "graphId", "parentTraceId", depth)
           VALUES ($1, $2, $3::timestamptz AT TIME ZONE 'UTC', $4, $5, $6, $6 || ' node', 'task', 'out', 'out',
            'output', $7, $7 || ' node', 'task', 'in', 'in', 'input', $8, $9, 'json', $10,
            CASE WHEN $11::text IS NULL THEN NULL ELSE 'g-sub' END, $11, CASE WHEN $11::text IS NULL THEN 0 ELSE 1 END)"#,
    )
    .bind(t.id)
    .bind(session)
    .bind(at(t.at))
    .bind(t.ms)
    .bind(t.status)
    .bind(t.from)
    .bind(t.to)
    .bind(t.payload)
    .bind(t.payload.map_or(0, |p| p.len() as i32))
    .bind(t.error)
    .bind(t.parent)
    .execute(store.pool())
    .await
    .expect("trace row");
}

/// The history in the replaced service's TimescaleDB schema, events included.
pub async fn write_timescale(store: &Store, history: &[FxSession]) {
    for s in history {
        sqlx::query(
            "INSERT INTO flow_trace_sessions (id, workflow_id, workflow_version_id, workflow_name, execution_id,
                start_time, end_time, status, summary, metadata, user_id)
             VALUES ($1, $2, 'v1', 'Orders', $3, $4, $5, $6, '{\"totalTraces\": 999}', '{\"k\": 1}', 'alice')",
        )
        .bind(s.id)
        .bind(WORKFLOW)
        .bind(s.execution_id)
        .bind(at(s.start))
        .bind(s.end.map(at))
        .bind(s.status)
        .execute(store.pool())
        .await
        .expect("session row");
        for t in &s.traces {
            sqlx::query(
                "INSERT INTO flow_traces (id, session_id, timestamp, duration, status, source_node_id,
                    source_node_name, source_node_type, source_port_id, source_port_name, source_port_type,
                    target_node_id, target_node_name, target_node_type, target_port_id, target_port_name,
                    target_port_type, data_payload, data_size, data_type, error_message, graph_id, parent_trace_id,
                    depth)
                 VALUES ($1, $2, $3, $4, $5, $6, $6 || ' node', 'task', 'out', 'out', 'output', $7, $7 || ' node',
                    'task', 'in', 'in', 'input', $8::jsonb, $9, 'json', $10,
                    CASE WHEN $11::text IS NULL THEN NULL ELSE 'g-sub' END, $11,
                    CASE WHEN $11::text IS NULL THEN 0 ELSE 1 END)",
            )
            .bind(t.id)
            .bind(s.id)
            .bind(at(t.at))
            .bind(t.ms)
            .bind(t.status)
            .bind(t.from)
            .bind(t.to)
            .bind(t.payload)
            .bind(t.payload.map_or(0, |p| p.len() as i32))
            .bind(t.error)
            .bind(t.parent)
            .execute(store.pool())
            .await
            .expect("trace row");
        }
        for (id, node, kind, t) in &s.events {
            sqlx::query(
                "INSERT INTO flow_trace_events (id, session_id, node_id, timestamp, event_type, data, duration)
                 VALUES ($1, $2, $3, $4, $5, '{\"n\": 1}', 3)",
            )
            .bind(id)
            .bind(s.id)
            .bind(node)
            .bind(at(*t))
            .bind(kind)
            .execute(store.pool())
            .await
            .expect("event row");
        }
    }
}

fn node(id: &str, port: &str, kind: &str) -> NodeRef {
    NodeRef {
        node_id: id.into(),
        node_name: Some(format!("{id} node")),
        node_type: Some("task".into()),
        port_id: Some(port.into()),
        port_name: Some(port.into()),
        port_type: Some(kind.into()),
    }
}

/// The same history through flowtrace's own ingest path: what imported data must answer like. `events` and
/// `metadata` follow what the layout being compared carries.
pub async fn write_flowtrace(store: &Store, history: &[FxSession], events: bool, metadata: bool) {
    let limits = Limits::default();
    for s in history {
        let meta = metadata.then(|| match s.execution_id {
            Some(e) => json!({ "k": 1, "executionId": e }),
            None => json!({ "k": 1 }),
        });
        let new = NewSession {
            id: Some(s.id.into()),
            workflow_id: WORKFLOW.into(),
            workflow_name: "Orders".into(),
            workflow_version_id: Some("v1".into()),
            user_id: Some("alice".into()),
            start_time: Some(at(s.start)),
            metadata: meta,
        };
        store.start_session(&limits, new).await.expect("start");
        let traces = s.traces.iter().map(|t| NewTrace {
            id: Some(t.id.into()),
            timestamp: at(t.at),
            duration: Some(f64::from(t.ms)),
            status: TraceStatus::parse(&t.status.to_uppercase()).expect("status"),
            source: node(t.from, "out", "output"),
            target: node(t.to, "in", "input"),
            payload: t.payload.map(|p| serde_json::from_str(p).expect("json")),
            size: Some(t.payload.map_or(0, |p| p.len() as i64)),
            data_type: Some("json".into()),
            preview: None,
            error_message: t.error.map(Into::into),
            error_code: None,
            error_stack: None,
            graph_id: t.parent.map(|_| "g-sub".into()),
            graph_name: None,
            parent_trace_id: t.parent.map(Into::into),
            depth: Some(if t.parent.is_some() { 1 } else { 0 }),
        });
        store.record_traces(&limits, s.id, traces.collect()).await.expect("traces");
        if events && !s.events.is_empty() {
            let events = s.events.iter().map(|(id, node, kind, t)| NewEvent {
                id: Some((*id).into()),
                node_id: (*node).into(),
                port_id: None,
                event_type: EventType::parse(&kind.to_uppercase()).expect("event type"),
                timestamp: at(*t),
                data: Some(json!({ "n": 1 })),
                duration: Some(3.0),
                metadata: None,
            });
            store.record_events(&limits, s.id, events.collect()).await.expect("events");
        }
        if let Some(end) = s.end {
            let status = SessionStatus::parse(&s.status.to_uppercase()).expect("session status");
            store.complete_session(s.id, status, Some(at(end))).await.expect("complete");
        }
    }
}

const ANSWERS: &str = r#"query($s: ID!, $w: String!, $at: DateTime!, $from: DateTime!, $to: DateTime!) {
    session(id: $s) {
        id workflowId workflowVersionId workflowName userId startTime endTime status metadata
        summary { totalTraces successCount errorCount warningCount totalDataSize averageDuration }
        traces(first: 100) { edges { node {
            id sessionId workflowId timestamp duration status graphId parentTraceId depth
            source { nodeId nodeName nodeType portId portName portType } target { nodeId portType }
            data { payload size type preview } error { message code }
        } } }
        events(first: 100) { edges { node { id sessionId nodeId eventType timestamp data duration } } }
    }
    workflowStateAt(workflowId: $w, at: $at) {
        sessionStatus session { id }
        nodes { nodeId status inputCount outputCount lastInput { id } lastOutput { id } lastError { message } }
    }
    hourly: sessionStats(workflowId: $w, granularity: HOUR, from: $from, to: $to) {
        bucket sessions completed failed cancelled running totalTraces errorCount avgDuration
    }
    daily: sessionStats(workflowId: $w, granularity: DAY, from: $from, to: $to) { bucket sessions totalTraces }
    nodePerformance(workflowId: $w, from: $from, to: $to) { bucket nodeId traceCount errorCount totalDataSize }
    executionTimeline(sessionId: $s, bucketSeconds: 60, from: $from, to: $to) {
        bucket traceCount errorCount dataSize activeNodes
    }
}"#;

/// What the dashboards ask about each session of the history, and the workflow at moments inside it, without the
/// fields a store assigns itself (`seq`, `createdAt`, `updatedAt`).
pub async fn answers(app: &TestApp, history: &[FxSession]) -> Vec<Value> {
    let mut all = Vec::new();
    for s in history {
        for moment in [s.start + 1, s.start + 62, s.start + 95] {
            let vars = json!({ "s": s.id, "w": WORKFLOW, "at": at(moment), "from": at(-3600), "to": at(3600) });
            let mut data = app.ok(ANSWERS, vars).await;
            strip(&mut data);
            all.push(data);
        }
    }
    all
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for key in ["seq", "createdAt", "updatedAt"] {
                map.remove(key);
            }
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

pub fn args(from: &str) -> ImportArgs {
    ImportArgs {
        from: from.to_owned(),
        since: None,
        until: None,
        source_timezone: "UTC".into(),
        batch_rows: 50_000,
        limits: Limits::default(),
        policies: Default::default(),
    }
}

/// Runs `flowtrace import` as a process into `target`; returns its exit code and stdout.
pub async fn run_binary(target: &Store, from: &str, extra: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(crate::process::flowtrace_bin())
        .arg("import")
        .args(["--from", from])
        .args(extra)
        .env("DATABASE_URL", target.url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run flowtrace import");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.code().is_some(), "killed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), stdout + &String::from_utf8_lossy(&out.stderr))
}
