//! Table of bad inputs: each gets a stable `extensions.code` and a message a person can act on, and the database
//! holds exactly what it held before.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{RECORD, RECORD_EVENTS, START, at, record, session, trace};
use crate::harness::{Kind, TestApp};

const COMPLETE: &str = "mutation($id: ID!, $status: SessionStatus!, $end: DateTime) {
    completeSession(id: $id, status: $status, endTime: $end) { id } }";
const TRACES: &str = "query($s: ID, $w: String, $after: String, $first: Int, $last: Int, $from: DateTime, $to: DateTime) {
    traces(sessionId: $s, workflowId: $w, after: $after, first: $first, last: $last, from: $from, to: $to) { totalCount } }";
const EVENTS: &str =
    "query($s: ID!, $from: DateTime, $to: DateTime) { events(sessionId: $s, from: $from, to: $to) { totalCount } }";

/// Everything stored, as one string: any write would change it.
async fn fingerprint(app: &TestApp) -> String {
    sqlx::query_scalar(
        "SELECT concat_ws('|',
            (SELECT md5(COALESCE(string_agg(id::text || status || total_traces || COALESCE(end_time::text, '')
                || COALESCE(user_id, '') || updated_at::text, ',' ORDER BY id), '')) FROM flow_trace_sessions),
            (SELECT md5(COALESCE(string_agg(id::text || seq, ',' ORDER BY id), '')) FROM flow_traces),
            (SELECT md5(COALESCE(string_agg(id::text || seq, ',' ORDER BY id), '')) FROM flow_trace_events))",
    )
    .fetch_one(app.db.store.pool())
    .await
    .expect("fingerprint")
}

fn with(mut t: Value, path: &[&str], value: Value) -> Value {
    let mut at = &mut t;
    for key in &path[..path.len() - 1] {
        at = &mut at[*key];
    }
    at[path[path.len() - 1]] = value;
    t
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "x": inner }))
}

#[tokio::test]
async fn bad_inputs_get_stable_codes_and_change_nothing() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let stored = trace(1, "SUCCESS", "a", "b");
    record(&app, s, vec![stored.clone(), trace(2, "ERROR", "b", "c")]).await;
    let done = session(&app, "wf", 0).await;
    app.ok(COMPLETE, json!({ "id": done, "status": "COMPLETED", "end": at(30) })).await;
    let session_cursor = app.ok("{ sessions(first: 1) { edges { cursor } } }", json!({})).await["sessions"]["edges"][0]
        ["cursor"]
        .clone();

    let t = |s: i64| trace(s, "SUCCESS", "a", "b");
    let rec = |traces: Value| json!({ "s": s, "t": traces });
    let ev = |e: Value| json!({ "s": s, "e": [e] });
    let event = json!({ "nodeId": "a", "eventType": "LOG", "timestamp": at(1) });
    let long = "x".repeat(1000);
    let huge = "y".repeat(70_000);
    let dup = t(3);

    // (case, query, variables, expected code)
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("syntax error", "mutation { recordTraces(", json!({}), "BAD_USER_INPUT"),
        ("unknown field", "{ sessions { nope } }", json!({}), "BAD_USER_INPUT"),
        ("unknown operation type", "subscription { nope }", json!({}), "BAD_USER_INPUT"),
        ("empty session id", RECORD, json!({ "s": "", "t": [t(3)] }), "BAD_USER_INPUT"),
        (
            "trace id of 129 characters",
            RECORD,
            rec(json!([with(t(3), &["id"], json!("i".repeat(129)))])),
            "BAD_USER_INPUT",
        ),
        (
            "parentTraceId with NUL",
            RECORD,
            rec(json!([with(t(3), &["parentTraceId"], json!("p\u{0}"))])),
            "BAD_USER_INPUT",
        ),
        (
            "unparseable timestamp",
            RECORD,
            rec(json!([with(t(3), &["timestamp"], json!("yesterday"))])),
            "BAD_USER_INPUT",
        ),
        (
            "timestamp without zone",
            RECORD,
            rec(json!([with(t(3), &["timestamp"], json!("2026-11-20 10:00"))])),
            "BAD_USER_INPUT",
        ),
        (
            "timestamp in 1900",
            RECORD,
            rec(json!([with(t(3), &["timestamp"], json!("1900-01-01T00:00:00Z"))])),
            "BAD_USER_INPUT",
        ),
        (
            "timestamp in 2999",
            RECORD,
            rec(json!([with(t(3), &["timestamp"], json!("2999-01-01T00:00:00Z"))])),
            "BAD_USER_INPUT",
        ),
        (
            "timestamp as a number",
            RECORD,
            rec(json!([with(t(3), &["timestamp"], json!(1_700_000_000))])),
            "BAD_USER_INPUT",
        ),
        ("empty batch", RECORD, rec(json!([])), "BAD_USER_INPUT"),
        (
            "batch over the limit",
            RECORD,
            rec(Value::Array((0..10_001).map(|i| t(i % 100)).collect())),
            "LIMIT_EXCEEDED",
        ),
        ("duplicate ids in one batch", RECORD, rec(json!([dup.clone(), t(4), dup])), "BAD_USER_INPUT"),
        ("unknown session", RECORD, json!({ "s": Uuid::new_v4(), "t": [t(3)] }), "NOT_FOUND"),
        ("NaN duration", RECORD, rec(json!([with(t(3), &["duration"], json!("NaN"))])), "BAD_USER_INPUT"),
        ("negative duration", RECORD, rec(json!([with(t(3), &["duration"], json!(-5))])), "BAD_USER_INPUT"),
        ("duration as text", RECORD, rec(json!([with(t(3), &["duration"], json!("ten"))])), "BAD_USER_INPUT"),
        ("unknown trace status", RECORD, rec(json!([with(t(3), &["status"], json!("DONE"))])), "BAD_USER_INPUT"),
        ("lower-case status", RECORD, rec(json!([with(t(3), &["status"], json!("success"))])), "BAD_USER_INPUT"),
        ("missing target", RECORD, rec(json!([with(t(3), &["target"], Value::Null)])), "BAD_USER_INPUT"),
        ("empty nodeId", RECORD, rec(json!([with(t(3), &["source", "nodeId"], json!("  "))])), "BAD_USER_INPUT"),
        ("huge nodeId", RECORD, rec(json!([with(t(3), &["target", "nodeId"], json!(long))])), "LIMIT_EXCEEDED"),
        ("huge preview", RECORD, rec(json!([with(t(3), &["data", "preview"], json!(huge))])), "LIMIT_EXCEEDED"),
        (
            "deeply nested payload",
            RECORD,
            rec(json!([with(t(3), &["data", "payload"], nested(100))])),
            "LIMIT_EXCEEDED",
        ),
        (
            "payload over 1 MiB",
            RECORD,
            rec(json!([with(t(3), &["data", "payload"], json!("z".repeat(1_100_000)))])),
            "LIMIT_EXCEEDED",
        ),
        ("negative size", RECORD, rec(json!([with(t(3), &["data", "size"], json!(-1))])), "BAD_USER_INPUT"),
        ("negative depth", RECORD, rec(json!([with(t(3), &["depth"], json!(-2))])), "BAD_USER_INPUT"),
        ("empty graphId", RECORD, rec(json!([with(t(3), &["graphId"], json!(""))])), "BAD_USER_INPUT"),
        ("depth beyond Int", RECORD, rec(json!([with(t(3), &["depth"], json!(1u64 << 40))])), "BAD_USER_INPUT"),
        ("traces not a list", RECORD, json!({ "s": s, "t": 42 }), "BAD_USER_INPUT"),
        ("missing variable", RECORD, json!({ "t": [t(3)] }), "BAD_USER_INPUT"),
        (
            "a good item after a bad one",
            RECORD,
            rec(json!([t(5), with(t(6), &["duration"], json!(-1))])),
            "BAD_USER_INPUT",
        ),
        ("empty events batch", RECORD_EVENTS, json!({ "s": s, "e": [] }), "BAD_USER_INPUT"),
        (
            "unknown event type",
            RECORD_EVENTS,
            ev(with(event.clone(), &["eventType"], json!("PANIC"))),
            "BAD_USER_INPUT",
        ),
        (
            "negative event duration",
            RECORD_EVENTS,
            ev(with(event.clone(), &["duration"], json!(-0.5))),
            "BAD_USER_INPUT",
        ),
        ("deeply nested event data", RECORD_EVENTS, ev(with(event.clone(), &["data"], nested(90))), "LIMIT_EXCEEDED"),
        ("event for unknown session", RECORD_EVENTS, json!({ "s": Uuid::new_v4(), "e": [event.clone()] }), "NOT_FOUND"),
        ("empty workflowId", START, json!({ "input": { "workflowId": "", "workflowName": "n" } }), "BAD_USER_INPUT"),
        ("huge workflowName", START, json!({ "input": { "workflowId": "w", "workflowName": long } }), "LIMIT_EXCEEDED"),
        (
            "start in 1800",
            START,
            json!({ "input": { "workflowId": "w", "workflowName": "n", "startTime": "1800-01-01T00:00:00Z" } }),
            "BAD_USER_INPUT",
        ),
        (
            "metadata over 1 MiB",
            START,
            json!({ "input": { "workflowId": "w", "workflowName": "n", "metadata": { "a": "b".repeat(1_100_000) } } }),
            "LIMIT_EXCEEDED",
        ),
        ("complete as RUNNING", COMPLETE, json!({ "id": s, "status": "RUNNING" }), "BAD_USER_INPUT"),
        (
            "complete before start",
            COMPLETE,
            json!({ "id": s, "status": "COMPLETED", "end": at(-86_400) }),
            "BAD_USER_INPUT",
        ),
        ("complete again differently", COMPLETE, json!({ "id": done, "status": "FAILED" }), "BAD_USER_INPUT"),
        ("complete unknown session", COMPLETE, json!({ "id": Uuid::new_v4(), "status": "COMPLETED" }), "NOT_FOUND"),
        ("invalid cursor", TRACES, json!({ "s": s, "after": "%%%" }), "BAD_USER_INPUT"),
        ("cursor of another list", TRACES, json!({ "s": s, "after": session_cursor }), "BAD_USER_INPUT"),
        ("from after to", TRACES, json!({ "s": s, "from": at(10), "to": at(1) }), "BAD_USER_INPUT"),
        ("negative first", TRACES, json!({ "s": s, "first": -1 }), "BAD_USER_INPUT"),
        ("page over the limit", TRACES, json!({ "s": s, "first": 100_000 }), "LIMIT_EXCEEDED"),
        ("first and last", TRACES, json!({ "s": s, "first": 1, "last": 1 }), "BAD_USER_INPUT"),
        ("neither session nor workflow", TRACES, json!({}), "BAD_USER_INPUT"),
        ("events from after to", EVENTS, json!({ "s": s, "from": at(10), "to": at(1) }), "BAD_USER_INPUT"),
    ];
    assert!(cases.len() >= 40);

    let before = fingerprint(&app).await;
    for (name, query, variables, expected) in cases {
        let body = app.gql(query, variables).await;
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], expected, "{name}: {body:#}");
        let message = error["message"].as_str().unwrap_or("");
        assert!(message.len() > 10, "{name}: a message a person can act on, got {message:?}");
        assert_eq!(fingerprint(&app).await, before, "{name} changed stored data");
    }

    // Malformed bodies get the same error shape.
    for raw in ["{not json", "[1, 2, 3]", "", "null"] {
        let res = app
            .http
            .post(format!("{}/graphql", app.base))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .expect("sent");
        let body: Value = res.json().await.expect("json error body");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{raw:?}: {body}");
    }

    // SQL-looking text is just text: found nowhere, stored as given, and the tables are intact.
    let injection = "'; DROP TABLE flow_traces; --";
    let found = app
        .ok("query($q: String) { sessions(filter: { search: $q }) { totalCount } }", json!({ "q": injection }))
        .await;
    assert_eq!(found["sessions"]["totalCount"], 0);
    let r = record(&app, s, vec![with(t(9), &["target", "nodeId"], json!(injection))]).await;
    assert_eq!(r["accepted"], 1);
    let data = app.ok(TRACES, json!({ "s": s })).await;
    assert_eq!(data["traces"]["totalCount"], 3);

    // Refusals are counted per operation and per code.
    let metrics = app.get("/metrics").await.1;
    let metrics = metrics.as_str().unwrap_or_default();
    for expected in
        [r#"operation="mutation:completeSession",outcome="error""#, r#"code="NOT_FOUND""#, "operation=\"invalid\""]
    {
        assert!(metrics.contains(expected), "/metrics lacks {expected}:\n{metrics}");
    }
}
