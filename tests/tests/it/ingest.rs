//! Writes through GraphQL: sessions, traces, events; idempotency; all-or-nothing batches.

use serde_json::json;
use uuid::Uuid;

use crate::fixtures::{RECORD, RECORD_EVENTS, START, at, record, session, trace};
use crate::harness::{Kind, TestApp};

#[tokio::test]
async fn start_session_is_idempotent_on_id() {
    let app = TestApp::start(Kind::Default).await;
    let id = Uuid::new_v4();
    let input = json!({ "input": { "id": id, "workflowId": "wf", "workflowName": "Flow", "userId": "u1",
        "workflowVersionId": "v3", "metadata": { "env": "test" } } });
    let first = app.ok(START, input.clone()).await;
    let second = app.ok(START, input).await;
    assert_eq!(first["startSession"]["status"], "RUNNING");
    assert_eq!(first, second, "a retried start returns the same session");
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_trace_sessions").await, 1);

    let data =
        app.ok("query($id: ID!) { session(id: $id) { workflowVersionId userId metadata } }", json!({ "id": id })).await;
    assert_eq!(data["session"], json!({ "workflowVersionId": "v3", "userId": "u1", "metadata": { "env": "test" } }));
}

#[tokio::test]
async fn record_traces_updates_the_summary_and_retries_store_nothing_twice() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let mut batch = vec![trace(1, "SUCCESS", "a", "b"), trace(2, "ERROR", "b", "c"), trace(3, "WARNING", "c", "d")];
    batch[0]["duration"] = json!(4.0);
    batch[1]["duration"] = json!(8.0);
    batch[2]["duration"] = json!(null);
    batch[1]["error"] = json!({ "message": "boom", "code": "E1", "stack": "at c" });
    batch[2]["data"] = json!({ "payload": [1, 2], "size": 1000, "preview": "[1,2]" });
    assert_eq!(record(&app, s, batch.clone()).await, json!({ "accepted": 3, "duplicates": 0 }));
    assert_eq!(record(&app, s, batch).await, json!({ "accepted": 0, "duplicates": 3 }));

    let data = app
        .ok(
            "query($id: ID!) { session(id: $id) { summary { totalTraces successCount errorCount warningCount
                totalDataSize averageDuration } traces { edges { node { status error { message code stack }
                data { size preview } source { nodeId portId } } } } } }",
            json!({ "id": s }),
        )
        .await;
    let summary = &data["session"]["summary"];
    assert_eq!(summary["totalTraces"], 3);
    assert_eq!(summary["successCount"], 1);
    assert_eq!(summary["errorCount"], 1);
    assert_eq!(summary["warningCount"], 1);
    // Sizes: two payloads measured as JSON ({"n":1} and {"n":2}: 7 bytes each) plus one given size.
    assert_eq!(summary["totalDataSize"], 1014);
    assert_eq!(summary["averageDuration"], 6.0, "the mean of the traces that reported a duration");
    let edges = data["session"]["traces"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 3);
    assert_eq!(edges[1]["node"]["error"], json!({ "message": "boom", "code": "E1", "stack": "at c" }));
    assert_eq!(edges[2]["node"]["data"], json!({ "size": 1000, "preview": "[1,2]" }));
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces").await, 3);
}

#[tokio::test]
async fn a_bad_item_rejects_the_whole_batch() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    record(&app, s, vec![trace(1, "SUCCESS", "a", "b")]).await;

    let mut batch: Vec<_> = (2..10).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    batch[5]["duration"] = json!(-1.0);
    let (code, message) = app.err(RECORD, json!({ "s": s, "t": batch })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("traces[5].duration"), "names the item: {message}");

    let mut batch: Vec<_> = (2..10).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    batch[3]["id"] = batch[1]["id"].clone();
    let (code, message) = app.err(RECORD, json!({ "s": s, "t": batch })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("traces[3].id"), "{message}");

    let mut batch: Vec<_> = (2..10).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    batch[7]["timestamp"] = json!("not a time");
    let (code, _) = app.err(RECORD, json!({ "s": s, "t": batch })).await;
    assert_eq!(code, "BAD_USER_INPUT");

    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces").await, 1, "nothing of the bad batches was stored");
    assert_eq!(app.scalar_i64("SELECT total_traces FROM flow_trace_sessions").await, 1);
}

#[tokio::test]
async fn unknown_sessions_and_oversized_batches_are_refused() {
    let app = TestApp::start(Kind::Default).await;
    let (code, _) = app.err(RECORD, json!({ "s": Uuid::new_v4(), "t": [trace(1, "SUCCESS", "a", "b")] })).await;
    assert_eq!(code, "NOT_FOUND");

    let s = session(&app, "wf", 0).await;
    let batch: Vec<_> = (0..10_001).map(|i| trace(i % 3600, "SUCCESS", "a", "b")).collect();
    let (code, message) = app.err(RECORD, json!({ "s": s, "t": batch })).await;
    assert_eq!(code, "LIMIT_EXCEEDED");
    assert!(message.contains("10000"), "{message}");

    let batch: Vec<_> = (0..10_000).map(|i| trace(i % 3600, "SUCCESS", "a", "b")).collect();
    assert_eq!(record(&app, s, batch).await["accepted"], 10_000, "exactly the limit is accepted");
}

#[tokio::test]
async fn events_are_recorded_idempotently_and_filtered() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let events = json!([
        { "id": Uuid::new_v4(), "nodeId": "a", "eventType": "START", "timestamp": at(1) },
        { "id": Uuid::new_v4(), "nodeId": "a", "eventType": "LOG", "timestamp": at(2), "data": { "line": "hi" } },
        { "id": Uuid::new_v4(), "nodeId": "b", "eventType": "ERROR", "timestamp": at(3), "duration": 2.5,
          "metadata": { "retry": 1 }, "portId": "in" },
    ]);
    let r = app.ok(RECORD_EVENTS, json!({ "s": s, "e": events })).await;
    assert_eq!(r["recordEvents"], json!({ "accepted": 3, "duplicates": 0 }));
    let r = app.ok(RECORD_EVENTS, json!({ "s": s, "e": events })).await;
    assert_eq!(r["recordEvents"], json!({ "accepted": 0, "duplicates": 3 }));

    let q = "query($s: ID!, $types: [EventType!], $node: String) {
        events(sessionId: $s, eventTypes: $types, nodeId: $node) { totalCount edges { node { nodeId eventType data metadata duration portId } } } }";
    let all = app.ok(q, json!({ "s": s })).await;
    assert_eq!(all["events"]["totalCount"], 3);
    let errors = app.ok(q, json!({ "s": s, "types": ["ERROR", "START"], "node": "b" })).await;
    assert_eq!(
        errors["events"]["edges"],
        json!([{ "node": { "nodeId": "b", "eventType": "ERROR", "data": null, "metadata": { "retry": 1 }, "duration": 2.5, "portId": "in" } }])
    );
    let (code, _) = app
        .err(RECORD_EVENTS, json!({ "s": s, "e": [{ "nodeId": "a", "eventType": "NOPE", "timestamp": at(1) }] }))
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
}

#[tokio::test]
async fn complete_session_sets_the_outcome_once() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let complete = "mutation($id: ID!, $status: SessionStatus!, $end: DateTime) {
        completeSession(id: $id, status: $status, endTime: $end) { status endTime } }";
    let done = app.ok(complete, json!({ "id": s, "status": "FAILED", "end": at(60) })).await;
    assert_eq!(done["completeSession"]["status"], "FAILED");
    assert_eq!(
        done["completeSession"]["endTime"],
        json!((crate::fixtures::t0() + chrono::Duration::seconds(60)).to_rfc3339())
    );
    // The same completion again is a harmless retry; a different outcome is refused.
    let again = app.ok(complete, json!({ "id": s, "status": "FAILED", "end": at(60) })).await;
    assert_eq!(again, done);
    let (code, message) = app.err(complete, json!({ "id": s, "status": "COMPLETED" })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("already ended"), "{message}");

    let other = session(&app, "wf", 100).await;
    let (code, _) = app.err(complete, json!({ "id": other, "status": "COMPLETED", "end": at(50) })).await;
    assert_eq!(code, "BAD_USER_INPUT", "an end before the start is refused");
    let (code, _) = app.err(complete, json!({ "id": Uuid::new_v4(), "status": "COMPLETED" })).await;
    assert_eq!(code, "NOT_FOUND");
}

#[tokio::test]
async fn delete_old_sessions_is_deprecated_and_changes_nothing() {
    let app = TestApp::start(Kind::Default).await;
    session(&app, "wf", 0).await;
    let data = app.ok("mutation { deleteOldSessions(days: 0) }", json!({})).await;
    assert_eq!(data["deleteOldSessions"], 0);
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_trace_sessions").await, 1);
    let body = app
        .ok("{ __type(name: \"Mutation\") { fields(includeDeprecated: true) { name isDeprecated } } }", json!({}))
        .await;
    let fields = body["__type"]["fields"].as_array().expect("fields");
    assert!(fields.contains(&json!({ "name": "deleteOldSessions", "isDeprecated": true })));
}
