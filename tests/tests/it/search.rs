//! Session and trace search: every filter on data whose answer is known, in both modes, and bad bounds refused.

use serde_json::{Value, json};

use crate::fixtures::{START, at, record, session, trace};
use crate::harness::{Kind, TestApp, try_test_db};

const SEARCH: &str = "query($s: ID!, $q: TraceSearchInput) {
    traces(sessionId: $s, search: $q, first: 100) { totalCount edges { node { target { nodeId } } } } }";

/// A trace a → `target` with a duration, an error code, a graph and a parent as given.
fn shaped(
    s: i64,
    status: &str,
    target: &str,
    ms: f64,
    code: Option<&str>,
    graph: &str,
    parent: Option<&Value>,
) -> Value {
    let mut t = trace(s, status, "a", target);
    t["duration"] = json!(ms);
    if let Some(code) = code {
        t["error"] = json!({ "message": "it failed", "code": code });
    }
    t["graphId"] = json!(graph);
    if let Some(p) = parent {
        t["parentTraceId"] = p["id"].clone();
        t["depth"] = json!(1);
    }
    t
}

async fn targets(app: &TestApp, s: &Value, q: Value) -> (i64, Vec<String>) {
    let data = app.ok(SEARCH, json!({ "s": s, "q": q })).await;
    let total = data["traces"]["totalCount"].as_i64().unwrap_or(-1);
    let edges = data["traces"]["edges"].as_array().cloned().unwrap_or_default();
    // Each trace is named by its target node.
    let names = edges.iter().map(|e| e["node"]["target"]["nodeId"].as_str().unwrap_or("").to_owned()).collect();
    (total, names)
}

async fn check(app: &TestApp) {
    let id = session(app, "search", 0).await;
    let s = json!(id);
    let top = shaped(1, "SUCCESS", "t1", 5.0, None, "main", None);
    let traces = vec![
        top.clone(),
        shaped(2, "ERROR", "t2", 50.0, Some("E_TIMEOUT"), "main", None),
        shaped(3, "WARNING", "t3", 500.0, None, "main", None),
        shaped(4, "SUCCESS", "t4", 7.0, None, "sub", Some(&top)),
        shaped(5, "ERROR", "t5", 70.0, Some("E_PARSE"), "sub", Some(&top)),
    ];
    record(app, id, traces).await;
    let cases = [
        (json!(null), vec!["t1", "t2", "t3", "t4", "t5"]),
        (json!({ "statuses": ["ERROR", "WARNING"] }), vec!["t2", "t3", "t5"]),
        (json!({ "statuses": [] }), vec!["t1", "t2", "t3", "t4", "t5"]),
        (json!({ "minDuration": 50 }), vec!["t2", "t3", "t5"]),
        (json!({ "minDuration": 6, "maxDuration": 70 }), vec!["t2", "t4", "t5"]),
        (json!({ "errorCode": "E_PARSE" }), vec!["t5"]),
        (json!({ "graphId": "sub" }), vec!["t4", "t5"]),
        (json!({ "parentTraceId": top["id"] }), vec!["t4", "t5"]),
        (json!({ "depth": 0 }), vec!["t1", "t2", "t3"]),
        (json!({ "graphId": "sub", "statuses": ["ERROR"], "maxDuration": 100 }), vec!["t5"]),
        (json!({ "errorCode": "E_NONE" }), vec![]),
    ];
    for (q, want) in cases {
        let (total, got) = targets(app, &s, q.clone()).await;
        assert_eq!(got, want, "{q}");
        assert_eq!(total, want.len() as i64, "totalCount agrees with the page for {q}");
    }
    for bad in [
        json!({ "minDuration": -1 }),
        json!({ "minDuration": 10, "maxDuration": 5 }),
        json!({ "depth": -1 }),
        json!({ "parentTraceId": "" }),
    ] {
        let (code, _) = app.err(SEARCH, json!({ "s": s, "q": bad })).await;
        assert_eq!(code, "BAD_USER_INPUT", "{bad}");
    }
}

#[tokio::test]
async fn trace_search_filters_answer_the_same_in_both_modes() {
    check(&TestApp::start(Kind::Default).await).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check(&TestApp::with_db(db, Default::default()).await).await;
    }
}

const SESSIONS: &str =
    "query($f: SessionFilter) { sessions(filter: $f, first: 50) { totalCount edges { node { workflowName } } } }";
const COMPLETE: &str =
    "mutation($id: ID!, $end: DateTime) { completeSession(id: $id, status: COMPLETED, endTime: $end) { id } }";

/// Session `name` of workflow `found`, lasting `seconds` (None: still running), with `metadata` and one trace
/// `a → node` of `status`.
async fn found(app: &TestApp, name: &str, seconds: Option<i64>, metadata: Value, node: &str, status: &str) {
    let id = uuid::Uuid::new_v4();
    let input =
        json!({ "id": id, "workflowId": "found", "workflowName": name, "startTime": at(0), "metadata": metadata });
    app.ok(START, json!({ "input": input })).await;
    let mut t = trace(1, status, "a", node);
    t["target"]["portName"] = json!(format!("{node} port"));
    record(app, id, vec![t]).await;
    if let Some(s) = seconds {
        app.ok(COMPLETE, json!({ "id": id, "end": at(s) })).await;
    }
}

async fn check_sessions(app: &TestApp) {
    found(app, "quick", Some(1), json!({ "env": "prod", "team": "a" }), "Parser", "SUCCESS").await;
    found(app, "slow", Some(600), json!({ "env": "prod" }), "Loader", "ERROR").await;
    found(app, "running", None, json!({ "env": "dev" }), "Loader", "SUCCESS").await;
    let cases = [
        (json!({}), vec!["quick", "slow", "running"]),
        (json!({ "minDuration": 2000 }), vec!["slow"]),
        (json!({ "maxDuration": 1000 }), vec!["quick"]),
        (json!({ "minDuration": 0, "maxDuration": 600000 }), vec!["quick", "slow"]),
        (json!({ "hasErrors": true }), vec!["slow"]),
        (json!({ "hasErrors": false }), vec!["quick", "running"]),
        (json!({ "metadata": { "env": "prod" } }), vec!["quick", "slow"]),
        (json!({ "metadata": { "env": "prod", "team": "a" } }), vec!["quick"]),
        (json!({ "metadata": { "env": "staging" } }), vec![]),
        (json!({ "node": "loader" }), vec!["slow", "running"]),
        (json!({ "node": "parser port" }), vec!["quick"]),
        (json!({ "node": "loader", "hasErrors": false }), vec!["running"]),
    ];
    for (mut f, want) in cases {
        f["workflowId"] = json!("found");
        let data = app.ok(SESSIONS, json!({ "f": f })).await;
        let mut got: Vec<String> = data["sessions"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e["node"]["workflowName"].as_str().unwrap_or("").to_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = want.into_iter().map(String::from).collect();
        want.sort();
        assert_eq!(got, want, "{f}");
        assert_eq!(data["sessions"]["totalCount"], json!(want.len()), "totalCount for {f}");
    }
    for bad in [json!({ "minDuration": -5 }), json!({ "minDuration": 9, "maxDuration": 1 })] {
        let (code, _) = app.err(SESSIONS, json!({ "f": bad })).await;
        assert_eq!(code, "BAD_USER_INPUT", "{bad}");
    }
}

#[tokio::test]
async fn session_search_filters_answer_the_same_in_both_modes() {
    check_sessions(&TestApp::start(Kind::Default).await).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check_sessions(&TestApp::with_db(db, Default::default()).await).await;
    }
}
