//! `compareSessions` on two runs whose differences the test computes from what it inserted, in both modes; unknown
//! sessions NOT_FOUND, too large ones LIMIT_EXCEEDED.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::fixtures::{record, session, trace};
use crate::harness::{Kind, TestApp, try_test_db};

const COMPARE: &str = "query($a: ID!, $b: ID!) { compareSessions(a: $a, b: $b) {
    a { id } b { id }
    nodes { key differs
        a { inputCount outputCount errorCount totalDuration avgDuration status }
        b { inputCount outputCount errorCount totalDuration avgDuration status } }
    edges { key { sourceNodeId sourcePortId targetNodeId targetPortId } differs
        a { traceCount errorCount totalDuration avgDuration } b { traceCount errorCount totalDuration avgDuration } }
    firstDivergence { nodeId index a { edge { sourceNodeId targetNodeId } status } b { edge { sourceNodeId targetNodeId } status } } } }";
const STATE: &str =
    "query($s: ID!, $at: DateTime!) { sessionStateAt(sessionId: $s, at: $at) { nodes { nodeId status } } }";

/// (source, target, status, duration)
type Step = (&'static str, &'static str, &'static str, f64);

const RUN_A: [Step; 4] = [
    ("start", "x", "SUCCESS", 1.0),
    ("x", "y", "SUCCESS", 2.0),
    ("y", "z", "SUCCESS", 3.0),
    ("x", "y", "SUCCESS", 4.0),
];
const RUN_B: [Step; 5] = [
    ("start", "x", "SUCCESS", 1.5),
    ("x", "y", "SUCCESS", 2.5),
    ("y", "z", "ERROR", 3.5),
    ("x", "y", "SUCCESS", 4.5),
    ("z", "w", "SUCCESS", 5.5),
];

async fn run(app: &TestApp, steps: &[Step]) -> uuid::Uuid {
    let s = session(app, "cmp", 0).await;
    let traces = steps
        .iter()
        .enumerate()
        .map(|(i, (from, to, status, ms))| {
            let mut t = trace(i as i64 + 1, status, from, to);
            t["duration"] = json!(ms);
            t
        })
        .collect();
    record(app, s, traces).await;
    s
}

fn order(runs: [&[Step]; 2]) -> Vec<&'static str> {
    let mut seen = Vec::new();
    for (from, to, _, _) in runs.into_iter().flatten() {
        for n in [*from, *to] {
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
    }
    seen
}

/// The node stats of one run, as the API shows them, with the statuses `sessionStateAt` gives.
fn node_stats(steps: &[Step], node: &str, status: &BTreeMap<String, Value>) -> Value {
    let inputs = steps.iter().filter(|s| s.1 == node).count();
    let out: Vec<&Step> = steps.iter().filter(|s| s.0 == node).collect();
    if inputs == 0 && out.is_empty() {
        return Value::Null;
    }
    let total: f64 = out.iter().map(|s| s.3).sum();
    json!({ "inputCount": inputs, "outputCount": out.len(), "errorCount": out.iter().filter(|s| s.2 == "ERROR").count(),
            "totalDuration": total, "avgDuration": (!out.is_empty()).then(|| total / out.len() as f64),
            "status": status[node] })
}

fn edge_stats(steps: &[Step], edge: (&str, &str)) -> Value {
    let along: Vec<&Step> = steps.iter().filter(|s| (s.0, s.1) == edge).collect();
    if along.is_empty() {
        return Value::Null;
    }
    let total: f64 = along.iter().map(|s| s.3).sum();
    json!({ "traceCount": along.len(), "errorCount": along.iter().filter(|s| s.2 == "ERROR").count(),
            "totalDuration": total, "avgDuration": total / along.len() as f64 })
}

/// The first node whose (edge, status) sequence differs, and where.
fn divergence(a: &[Step], b: &[Step]) -> Value {
    for node in order([a, b]) {
        let seq = |steps: &[Step]| -> Vec<(&str, &str, &str)> {
            steps.iter().filter(|s| s.0 == node || s.1 == node).map(|s| (s.0, s.1, s.2)).collect()
        };
        let (sa, sb) = (seq(a), seq(b));
        if sa != sb {
            let index = (0..).find(|&i| sa.get(i) != sb.get(i)).unwrap_or(0);
            let step = |s: Option<&(&str, &str, &str)>| {
                s.map(|s| json!({ "edge": { "sourceNodeId": s.0, "targetNodeId": s.1 }, "status": s.2 }))
            };
            return json!({ "nodeId": node, "index": index, "a": step(sa.get(index)), "b": step(sb.get(index)) });
        }
    }
    Value::Null
}

async fn statuses(app: &TestApp, s: uuid::Uuid) -> BTreeMap<String, Value> {
    let data = app.ok(STATE, json!({ "s": s, "at": "2100-01-01T00:00:00Z" })).await;
    let nodes = data["sessionStateAt"]["nodes"].as_array().cloned().unwrap_or_default();
    nodes.into_iter().map(|n| (n["nodeId"].as_str().unwrap_or("").to_owned(), n["status"].clone())).collect()
}

async fn expected(app: &TestApp, (a, ra): (uuid::Uuid, &[Step]), (b, rb): (uuid::Uuid, &[Step])) -> Value {
    let (sa, sb) = (statuses(app, a).await, statuses(app, b).await);
    let nodes: Vec<Value> = order([ra, rb])
        .into_iter()
        .map(|n| {
            let (x, y) = (node_stats(ra, n, &sa), node_stats(rb, n, &sb));
            let key = |v: &Value| json!([v["inputCount"], v["outputCount"], v["errorCount"], v["status"]]);
            let differs = x.is_null() || y.is_null() || key(&x) != key(&y);
            json!({ "key": n, "differs": differs, "a": x, "b": y })
        })
        .collect();
    let mut edges: Vec<(&str, &str)> = ra.iter().chain(rb).map(|s| (s.0, s.1)).collect();
    edges.sort();
    edges.dedup();
    let edges: Vec<Value> = edges
        .into_iter()
        .map(|e| {
            let (x, y) = (edge_stats(ra, e), edge_stats(rb, e));
            let key = |v: &Value| json!([v["traceCount"], v["errorCount"]]);
            let differs = x.is_null() || y.is_null() || key(&x) != key(&y);
            json!({ "key": { "sourceNodeId": e.0, "sourcePortId": "out", "targetNodeId": e.1, "targetPortId": "in" },
                    "differs": differs, "a": x, "b": y })
        })
        .collect();
    json!({ "a": { "id": a }, "b": { "id": b }, "nodes": nodes, "edges": edges, "firstDivergence": divergence(ra, rb) })
}

async fn check(app: &TestApp) {
    let (a, b) = (run(app, &RUN_A).await, run(app, &RUN_B).await);
    let got = app.ok(COMPARE, json!({ "a": a, "b": b })).await["compareSessions"].clone();
    assert_eq!(got, expected(app, (a, &RUN_A), (b, &RUN_B)).await);
    assert!(!got["firstDivergence"].is_null(), "the runs differ");

    let same = app.ok(COMPARE, json!({ "a": a, "b": a })).await["compareSessions"].clone();
    assert_eq!(same, expected(app, (a, &RUN_A), (a, &RUN_A)).await);
    assert_eq!(same["firstDivergence"], Value::Null);

    let (code, message) = app.err(COMPARE, json!({ "a": "no-such-session", "b": b })).await;
    assert_eq!(code, "NOT_FOUND");
    assert!(message.contains("no-such-session"), "{message}");
    let (code, message) = app.err(COMPARE, json!({ "a": a, "b": "missing-b" })).await;
    assert_eq!(code, "NOT_FOUND");
    assert!(message.contains("missing-b"), "{message}");
    assert_eq!(app.err(COMPARE, json!({ "a": "", "b": b })).await.0, "BAD_USER_INPUT");

    // The bound reads the session's summary.
    let big = run(app, &RUN_A).await;
    sqlx::query("UPDATE flow_trace_sessions SET total_traces = 100001 WHERE id = $1")
        .bind(big.to_string())
        .execute(app.db.store.pool())
        .await
        .expect("update");
    assert_eq!(app.err(COMPARE, json!({ "a": a, "b": big })).await.0, "LIMIT_EXCEEDED");
}

#[tokio::test]
async fn compare_sessions_lines_up_nodes_and_edges_and_finds_the_first_divergence_in_both_modes() {
    check(&TestApp::start(Kind::Default).await).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check(&TestApp::with_db(db, Default::default()).await).await;
    }
}
