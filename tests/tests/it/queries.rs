//! Reads through GraphQL: sessions with filters, traces and events, Relay pagination.

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{record, session, trace};
use crate::harness::{Kind, TestApp};

const TRACES: &str = "query($s: ID, $w: String, $first: Int, $after: String, $last: Int, $before: String,
    $node: String, $status: TraceStatus, $from: DateTime, $to: DateTime) {
    traces(sessionId: $s, workflowId: $w, first: $first, after: $after, last: $last, before: $before,
           nodeId: $node, status: $status, from: $from, to: $to) {
        totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        edges { cursor node { id timestamp seq } }
    } }";

fn ids(conn: &Value) -> Vec<String> {
    conn["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].as_str().expect("id").to_owned()).collect()
}

#[tokio::test]
async fn paginating_1200_traces_forward_and_backward_has_no_gaps_or_repeats() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    // Equal timestamps in every pair, so the order must fall back to seq.
    let all: Vec<Value> = (0..1200).map(|i| trace(i / 2, "SUCCESS", "a", "b")).collect();
    for chunk in all.chunks(400) {
        record(&app, s, chunk.to_vec()).await;
    }

    let mut forward = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = app.ok(TRACES, json!({ "s": s, "first": 250, "after": after })).await;
        let conn = &data["traces"];
        assert_eq!(conn["totalCount"], 1200);
        forward.extend(ids(conn));
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(forward.len(), 1200);
    assert_eq!(forward.iter().collect::<HashSet<_>>().len(), 1200, "no repeats");

    let mut backward = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let data = app.ok(TRACES, json!({ "s": s, "last": 333, "before": before })).await;
        let conn = &data["traces"];
        let mut page = ids(conn);
        page.extend(backward);
        backward = page;
        if conn["pageInfo"]["hasPreviousPage"] == false {
            break;
        }
        before = conn["pageInfo"]["startCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(backward, forward, "both directions give the same order");

    // Order is (timestamp, seq).
    let data = app.ok(TRACES, json!({ "s": s, "first": 1000 })).await;
    let keys: Vec<(String, i64)> = data["traces"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["node"]["timestamp"].as_str().expect("ts").to_owned(),
                e["node"]["seq"].as_str().expect("seq").parse().expect("n"),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "strictly increasing (timestamp, seq)");
}

#[tokio::test]
async fn trace_filters_narrow_by_workflow_node_status_and_time() {
    let app = TestApp::start(Kind::Default).await;
    let s1 = session(&app, "wf-a", 0).await;
    let s2 = session(&app, "wf-b", 0).await;
    record(&app, s1, vec![trace(1, "SUCCESS", "a", "b"), trace(2, "ERROR", "b", "c"), trace(3, "SUCCESS", "c", "d")])
        .await;
    record(&app, s2, vec![trace(1, "SUCCESS", "x", "y")]).await;

    let app = &app;
    let count = |v: Value| async move { app.ok(TRACES, v).await["traces"]["totalCount"].as_i64().expect("count") };
    assert_eq!(count(json!({ "w": "wf-a" })).await, 3);
    assert_eq!(count(json!({ "w": "wf-b" })).await, 1);
    assert_eq!(count(json!({ "s": s1, "node": "b" })).await, 2, "as target of one and source of another");
    assert_eq!(count(json!({ "s": s1, "status": "ERROR" })).await, 1);
    assert_eq!(
        count(json!({ "s": s1, "from": crate::fixtures::at(2), "to": crate::fixtures::at(3) })).await,
        2,
        "bounds are inclusive"
    );

    let (code, _) = app.err(TRACES, json!({})).await;
    assert_eq!(code, "BAD_USER_INPUT", "a session or workflow is required");
    let (code, _) = app.err(TRACES, json!({ "s": s1, "after": "bm90IGEgY3Vyc29y" })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = app.err(TRACES, json!({ "s": s1, "first": 5000 })).await;
    assert_eq!(code, "LIMIT_EXCEEDED");
    let (code, _) = app.err(TRACES, json!({ "s": s1, "first": 1, "last": 1 })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) =
        app.err(TRACES, json!({ "s": s1, "from": crate::fixtures::at(5), "to": crate::fixtures::at(1) })).await;
    assert_eq!(code, "BAD_USER_INPUT", "from after to");
}

#[tokio::test]
async fn sessions_are_listed_newest_first_with_filters_and_total() {
    let app = TestApp::start(Kind::Default).await;
    let mut started = Vec::new();
    for i in 0..30 {
        let wf = if i % 3 == 0 { "billing-sync" } else { "etl" };
        started.push(session(&app, wf, i * 60).await);
    }
    let complete = "mutation($id: ID!) { completeSession(id: $id, status: COMPLETED) { status } }";
    for id in &started[..5] {
        app.ok(complete, json!({ "id": id })).await;
    }
    let q = "query($f: SessionFilter, $first: Int, $after: String) {
        sessions(filter: $f, first: $first, after: $after) {
            totalCount pageInfo { hasNextPage endCursor } edges { node { id workflowId status } } } }";

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = app.ok(q, json!({ "first": 7, "after": after })).await;
        assert_eq!(data["sessions"]["totalCount"], 30);
        seen.extend(ids(&data["sessions"]));
        if data["sessions"]["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = data["sessions"]["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let newest_first: Vec<String> = started.iter().rev().map(Uuid::to_string).collect();
    assert_eq!(seen, newest_first);

    let app = &app;
    let total =
        |f: Value| async move { app.ok(q, json!({ "f": f })).await["sessions"]["totalCount"].as_i64().expect("n") };
    assert_eq!(total(json!({ "workflowId": "billing-sync" })).await, 10);
    assert_eq!(total(json!({ "status": "COMPLETED" })).await, 5);
    assert_eq!(total(json!({ "status": "RUNNING", "workflowId": "etl" })).await, 17);
    assert_eq!(total(json!({ "search": "BILLING" })).await, 10, "search ignores case");
    assert_eq!(total(json!({ "search": "%" })).await, 0, "wildcards are literal");
    assert_eq!(
        total(json!({ "startedAfter": crate::fixtures::at(600), "startedBefore": crate::fixtures::at(1200) })).await,
        10
    );

    let (code, _) = app.err(q, json!({ "after": "garbage" })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let data = app.ok("query($id: ID!) { session(id: $id) { id } }", json!({ "id": Uuid::new_v4() })).await;
    assert_eq!(data["session"], Value::Null, "an unknown session is null, not an error");
}

/// The server keeps parsed documents by query text: the same text must still run the operation each request names,
/// with its own variables, and a text that does not parse must fail every time.
#[tokio::test]
async fn repeated_query_texts_run_what_each_request_asks() {
    let app = TestApp::start(Kind::Default).await;
    let a = session(&app, "wf-a", 0).await;
    let b = session(&app, "wf-b", 60).await;
    let text = "query ById($id: ID!) { session(id: $id) { workflowId } }
                query Newest { sessions(first: 1) { edges { node { workflowId } } } }";
    let post = |operation: &'static str, variables: Value| {
        let request = app.http.post(format!("{}/graphql", app.base));
        async move {
            let body = json!({ "query": text, "operationName": operation, "variables": variables });
            request.json(&body).send().await.expect("POST").json::<Value>().await.expect("JSON")
        }
    };
    for _ in 0..2 {
        assert_eq!(post("ById", json!({ "id": a })).await["data"]["session"]["workflowId"], "wf-a");
        assert_eq!(post("ById", json!({ "id": b })).await["data"]["session"]["workflowId"], "wf-b");
        let newest = post("Newest", json!({})).await;
        assert_eq!(newest["data"]["sessions"]["edges"][0]["node"]["workflowId"], "wf-b", "{newest}");
        let (code, _) = app.err("{ sessions(first: 1) { edges ", json!({})).await;
        assert_eq!(code, "BAD_USER_INPUT");
    }
}
