//! Builders for the data tests send, written as a client would send it.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestApp;

pub const START: &str = "mutation($input: StartSessionInput!) {
    startSession(input: $input) { id status startTime workflowId }
}";
pub const RECORD: &str =
    "mutation($s: UUID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted duplicates } }";
pub const RECORD_EVENTS: &str =
    "mutation($s: UUID!, $e: [EventInput!]!) { recordEvents(sessionId: $s, events: $e) { accepted duplicates } }";

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z").expect("time").with_timezone(&Utc)
}

pub fn at(seconds: i64) -> String {
    (t0() + Duration::seconds(seconds)).to_rfc3339()
}

/// Starts a session of `workflow` at `t0 + start_s`; returns its id.
pub async fn session(app: &TestApp, workflow: &str, start_s: i64) -> Uuid {
    let id = Uuid::new_v4();
    app.ok(
        START,
        json!({ "input": { "id": id, "workflowId": workflow, "workflowName": format!("{workflow} name"), "startTime": at(start_s) } }),
    )
    .await;
    id
}

/// A trace from `source` to `target` at `t0 + s` seconds.
pub fn trace(s: i64, status: &str, source: &str, target: &str) -> Value {
    json!({
        "id": Uuid::new_v4(),
        "timestamp": at(s),
        "duration": 10.0,
        "status": status,
        "source": { "nodeId": source, "portId": "out" },
        "target": { "nodeId": target, "portId": "in" },
        "data": { "payload": { "n": s }, "type": "json" },
    })
}

pub async fn record(app: &TestApp, session: Uuid, traces: Vec<Value>) -> Value {
    app.ok(RECORD, json!({ "s": session, "t": traces })).await["recordTraces"].clone()
}
