//! `flowtrace seed`: realistic demo data written through the same ingest path clients use.

use chrono::{DateTime, Duration, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::json;

use crate::domain::{EventType, SessionStatus, TraceStatus};
use crate::limits::Limits;
use crate::store::ingest::{NewEvent, NewTrace, NodeRef};
use crate::store::sessions::NewSession;
use crate::store::{Store, StoreResult};

/// A demo workflow: its edges (from node, to node), walked in order, branches included.
struct Workflow {
    id: &'static str,
    name: &'static str,
    edges: &'static [(&'static str, &'static str)],
}

const WORKFLOWS: &[Workflow] = &[
    Workflow {
        id: "etl-pipeline",
        name: "Nightly ETL",
        edges: &[
            ("extract", "transform"),
            ("transform", "validate"),
            ("transform", "enrich"),
            ("validate", "load"),
            ("enrich", "load"),
        ],
    },
    Workflow {
        id: "ml-training",
        name: "Model training",
        edges: &[("fetch-data", "preprocess"), ("preprocess", "train"), ("train", "evaluate"), ("evaluate", "deploy")],
    },
    Workflow {
        id: "notifications",
        name: "Customer notifications",
        edges: &[("trigger", "route"), ("route", "email"), ("route", "sms"), ("route", "push"), ("email", "audit")],
    },
];

const BATCH: usize = 1000;

/// Writes `sessions` sessions of `traces_per_session` traces each, spread over the last three days.
pub async fn seed(store: &Store, sessions: usize, traces_per_session: usize) -> StoreResult<()> {
    let limits = Limits::default();
    let bar = ProgressBar::new((sessions * traces_per_session) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} traces ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rng = rand::rng();
    let now = Utc::now();
    for i in 0..sessions {
        let workflow = &WORKFLOWS[i % WORKFLOWS.len()];
        // The last two keep running (started within the hour); the rest end one way or another.
        let outcome = match (i + 2 >= sessions, rng.random_range(0..10)) {
            (true, _) => SessionStatus::Running,
            (false, 0) => SessionStatus::Failed,
            (false, 1) => SessionStatus::Cancelled,
            _ => SessionStatus::Completed,
        };
        let age = if outcome == SessionStatus::Running { 60..3_600 } else { 3_600..3 * 86_400 };
        let start = now - Duration::seconds(rng.random_range(age));
        bar.set_message(format!("{} #{i}", workflow.id));
        let trigger = ["schedule", "manual", "webhook"][i % 3];
        let session = store
            .start_session(
                &limits,
                NewSession {
                    workflow_id: workflow.id.into(),
                    workflow_name: workflow.name.into(),
                    workflow_version_id: Some(format!("v{}", 1 + i % 3)),
                    user_id: Some(["alice", "bob", "carol"][i % 3].into()),
                    start_time: Some(start),
                    metadata: Some(json!({ "trigger": trigger, "seeded": true })),
                    ..Default::default()
                },
            )
            .await?;

        let mut at = start;
        // Keep every trace in the past: the session's traces fit between its start and now.
        let max_step_ms = ((now - start).num_milliseconds() / traces_per_session.max(1) as i64).clamp(1, 2_000);
        let mut traces = Vec::with_capacity(BATCH);
        let mut events = Vec::new();
        for n in 0..traces_per_session {
            let (from, to) = workflow.edges[n % workflow.edges.len()];
            let step = Duration::milliseconds(rng.random_range(1..=max_step_ms));
            at += step;
            let failing = outcome == SessionStatus::Failed && n + 1 == traces_per_session;
            let status = if failing {
                TraceStatus::Error
            } else if rng.random_range(0..50) == 0 {
                TraceStatus::Warning
            } else {
                TraceStatus::Success
            };
            traces.push(demo_trace(&mut rng, at, status, from, to, n));
            if n % workflow.edges.len() == 0 {
                events.push(event(to, EventType::Start, at, None));
            }
            if failing {
                events.push(event(to, EventType::Error, at, Some(json!({ "message": "upstream timed out" }))));
            } else if rng.random_range(0..20) == 0 {
                events.push(event(to, EventType::Log, at, Some(json!({ "line": format!("processed item {n}") }))));
            }
            if traces.len() == BATCH {
                bar.inc(traces.len() as u64);
                store.record_traces(&limits, &session.id, std::mem::take(&mut traces)).await?;
            }
        }
        if !traces.is_empty() {
            bar.inc(traces.len() as u64);
            store.record_traces(&limits, &session.id, traces).await?;
        }
        if outcome != SessionStatus::Running {
            events.push(event(workflow.edges[workflow.edges.len() - 1].1, EventType::Complete, at, None));
        }
        for chunk in events.chunks(BATCH) {
            store.record_events(&limits, &session.id, chunk.to_vec()).await?;
        }
        if outcome != SessionStatus::Running {
            store.complete_session(&session.id, outcome, Some(at + Duration::milliseconds(50))).await?;
        }
    }
    bar.finish_with_message("done");
    Ok(())
}

fn demo_trace(rng: &mut impl Rng, at: DateTime<Utc>, status: TraceStatus, from: &str, to: &str, n: usize) -> NewTrace {
    let rows = rng.random_range(1..500);
    let kind = ["json", "table", "text"].choose(rng).copied().unwrap_or("json");
    let error = status == TraceStatus::Error;
    NewTrace {
        id: None,
        timestamp: at,
        duration: Some(rng.random_range(1.0..800.0)),
        status,
        source: node(from, "out"),
        target: node(to, "in"),
        payload: Some(json!({ "batch": n, "rows": rows, "sample": { "id": n, "value": rng.random_range(0.0..1.0) } })),
        size: None,
        data_type: Some(kind.into()),
        preview: Some(format!("{rows} rows")),
        error_message: error.then(|| format!("{to} failed: upstream timed out")),
        error_code: error.then(|| "ETIMEDOUT".into()),
        error_stack: error.then(|| format!("at {to}.run (worker.js:42)")),
        graph_id: None,
        graph_name: None,
        parent_trace_id: None,
        depth: None,
    }
}

fn node(id: &str, port: &str) -> NodeRef {
    NodeRef {
        node_id: id.into(),
        node_name: Some(id.replace('-', " ")),
        node_type: Some("task".into()),
        port_id: Some(port.into()),
        port_name: Some(port.into()),
        port_type: Some("data".into()),
    }
}

fn event(node: &str, kind: EventType, at: DateTime<Utc>, data: Option<serde_json::Value>) -> NewEvent {
    NewEvent {
        id: None,
        node_id: node.into(),
        port_id: None,
        event_type: kind,
        timestamp: at,
        data,
        duration: None,
        metadata: None,
    }
}
