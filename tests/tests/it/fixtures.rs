//! Builders for the data tests send, written as a client would send it.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::TestApp;

pub const START: &str = "mutation($input: StartSessionInput!) {
    startSession(input: $input) { id status startTime workflowId }
}";
pub const RECORD: &str =
    "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted duplicates } }";
pub const RECORD_EVENTS: &str =
    "mutation($s: ID!, $e: [EventInput!]!) { recordEvents(sessionId: $s, events: $e) { accepted duplicates } }";

/// 10:00 UTC two days ago, fixed for the whole test run: recent enough that no retention (7 days for events, applied
/// by the server itself in plain mode) deletes test data while a test runs, on whatever day the tests run.
pub fn t0() -> DateTime<Utc> {
    static T0: std::sync::LazyLock<DateTime<Utc>> = std::sync::LazyLock::new(|| {
        let day = (Utc::now() - Duration::days(2)).date_naive();
        day.and_hms_opt(10, 0, 0).expect("10:00 exists").and_utc()
    });
    *T0
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
