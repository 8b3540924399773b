//! `workflowAnalytics` and the percentiles of `nodePerformance` on data whose answer the test computes itself, in
//! both modes, before and after the aggregates are materialised; bad arguments refused.

use serde_json::{Value, json};

use crate::fixtures::{at, record, session, trace};
use crate::harness::{Kind, TestApp, try_test_db};

const COMPLETE: &str = "mutation($id: ID!, $s: SessionStatus!, $end: DateTime) { completeSession(id: $id, status: $s, endTime: $end) { id } }";
const ANALYTICS: &str = "query($w: String!, $from: DateTime!, $to: DateTime!, $n: Int) {
    workflowAnalytics(workflowId: $w, from: $from, to: $to, slowestNodes: $n) {
        sessions completed failed cancelled running successRate
        sessionDuration { p50 p95 p99 }
        errorsByCode { key count sampleMessage }
        slowestNodes { nodeId traceCount percentiles { p50 p95 p99 } } } }";
const NODES: &str = "query($w: String, $n: String, $from: DateTime!, $to: DateTime!) {
    nodePerformance(workflowId: $w, nodeId: $n, from: $from, to: $to) { nodeId traceCount percentiles { p50 p95 p99 } } }";

/// The relative error the schema states for every percentile.
const BOUND: f64 = 0.06;

/// The nearest-rank percentile of `values`.
pub fn exact(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `got` (an API's `{ p50 p95 p99 }`) within the stated bound of the exact percentiles of `values`.
pub fn assert_within(got: &Value, values: &[f64], what: &str) {
    for (field, p) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        let want = exact(values, p);
        let got = got[field].as_f64().unwrap_or_else(|| panic!("{what}.{field} missing: {got}"));
        assert!((got - want).abs() <= want * BOUND, "{what}.{field}: {got}, exact {want}");
    }
}

fn timed(s: i64, status: &str, from: &str, to: &str, ms: f64, code: Option<&str>) -> Value {
    let mut t = trace(s, status, from, to);
    t["duration"] = json!(ms);
    if status == "ERROR" {
        t["error"] = json!({ "code": code, "message": format!("failed at {s}") });
    }
    t
}

/// What the test inserted, to compute the answers from.
struct Inserted {
    session_ms: Vec<f64>,
    into_b: Vec<f64>,
    into_c: Vec<f64>,
    errors: Vec<(Option<&'static str>, i64)>,
}

/// Hour 10:00: four sessions of `pct` (two completed, one failed, one running); traces a → b and b → c with
/// durations across several decades, some failed with codes.
async fn insert(app: &TestApp) -> Inserted {
    let mut ins = Inserted { session_ms: vec![], into_b: vec![], into_c: vec![], errors: vec![] };
    let first = session(app, "pct", 0).await;
    let mut traces = Vec::new();
    for i in 0..200 {
        let ms = 0.5 * 1.05_f64.powi(i);
        traces.push(timed(1 + i64::from(i), "SUCCESS", "a", "b", ms, None));
        ins.into_b.push(ms);
    }
    for i in 0..50 {
        let ms = 1000.0 + f64::from(i) * 37.0;
        let (status, code) = match i % 10 {
            0 => ("ERROR", Some("E1")),
            1 | 2 => ("ERROR", Some("E2")),
            3 => ("ERROR", None),
            _ => ("SUCCESS", None),
        };
        traces.push(timed(300 + i64::from(i), status, "b", "c", ms, code));
        ins.into_c.push(ms);
    }
    record(app, first, traces.clone()).await;
    for code in [Some("E1"), Some("E2"), None] {
        let count = traces.iter().filter(|t| t["status"] == "ERROR" && t["error"]["code"] == json!(code)).count();
        ins.errors.push((code, count as i64));
    }
    for (start, end, status, s) in
        [(0, 400_000, "COMPLETED", Some(first)), (100, 190_500, "COMPLETED", None), (200, 2_000, "FAILED", None)]
    {
        let id = match s {
            Some(id) => id,
            None => session(app, "pct", start).await,
        };
        let end_ms = start * 1000 + end;
        app.ok(COMPLETE, json!({ "id": id, "s": status, "end": end_at(end_ms) })).await;
        ins.session_ms.push(end as f64);
    }
    session(app, "pct", 300).await;
    ins
}

fn end_at(ms: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339(&at(0)).expect("t0") + chrono::Duration::milliseconds(ms)).to_rfc3339()
}

/// Checks every figure; returns the analytics, to compare the modes.
async fn check(app: &TestApp, ins: &Inserted) -> Value {
    let vars = json!({ "w": "pct", "from": at(0), "to": at(3599), "n": 5 });
    let w = app.ok(ANALYTICS, vars).await["workflowAnalytics"].clone();
    assert_eq!((w["sessions"].clone(), w["completed"].clone(), w["failed"].clone()), (json!(4), json!(2), json!(1)));
    assert_eq!((w["cancelled"].clone(), w["running"].clone()), (json!(0), json!(1)));
    assert_eq!(w["successRate"], json!(2.0 / 3.0));
    assert_within(&w["sessionDuration"], &ins.session_ms, "sessionDuration");
    let mut errors: Vec<&(Option<&str>, i64)> = ins.errors.iter().collect();
    errors.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.is_none().cmp(&y.0.is_none())).then(x.0.cmp(&y.0)));
    let codes: Vec<Value> = w["errorsByCode"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        codes.iter().map(|e| (e["key"].clone(), e["count"].clone())).collect::<Vec<_>>(),
        errors.iter().map(|(k, n)| (json!(k), json!(n))).collect::<Vec<_>>()
    );
    // Slowest first by the exact p95 of what each node received.
    let mut by_p95 = [("b", &ins.into_b), ("c", &ins.into_c)];
    by_p95.sort_by(|x, y| exact(y.1, 0.95).total_cmp(&exact(x.1, 0.95)));
    let slowest = w["slowestNodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(slowest.iter().map(|n| n["nodeId"].clone()).collect::<Vec<_>>(), by_p95.map(|n| json!(n.0)).to_vec());
    for (node, values) in by_p95 {
        let got = slowest.iter().find(|n| n["nodeId"] == node).cloned().unwrap_or_default();
        assert_eq!(got["traceCount"], json!(values.len()));
        assert_within(&got["percentiles"], values, node);
    }
    let one = app.ok(ANALYTICS, json!({ "w": "pct", "from": at(0), "to": at(3599), "n": 1 })).await;
    assert_eq!(one["workflowAnalytics"]["slowestNodes"].as_array().map(Vec::len), Some(1));

    let nodes = app.ok(NODES, json!({ "w": "pct", "n": "c", "from": at(0), "to": at(3599) })).await;
    assert_within(&nodes["nodePerformance"][0]["percentiles"], &ins.into_c, "nodePerformance c");
    let nodes = app.ok(NODES, json!({ "w": "pct", "n": "b", "from": at(0), "to": at(3599) })).await;
    assert_within(&nodes["nodePerformance"][0]["percentiles"], &ins.into_b, "nodePerformance b");
    // The histograms are merged only when percentiles are selected: selected through a fragment, they still are.
    let through_fragment = "query($w: String, $n: String, $from: DateTime!, $to: DateTime!) {
        nodePerformance(workflowId: $w, nodeId: $n, from: $from, to: $to) { nodeId ...P } }
        fragment P on NodePerformanceBucket { percentiles { p50 p95 p99 } }";
    let nodes = app.ok(through_fragment, json!({ "w": "pct", "n": "b", "from": at(0), "to": at(3599) })).await;
    assert_within(&nodes["nodePerformance"][0]["percentiles"], &ins.into_b, "nodePerformance b, through a fragment");

    let empty = app.ok(ANALYTICS, json!({ "w": "none", "from": at(0), "to": at(3599) })).await;
    assert_eq!(empty["workflowAnalytics"]["sessions"], 0);
    assert_eq!(empty["workflowAnalytics"]["successRate"], Value::Null);
    for (vars, code) in [
        (json!({ "w": "pct", "from": at(0), "to": at(32 * 86_400) }), "BAD_USER_INPUT"),
        (json!({ "w": "pct", "from": at(10), "to": at(0) }), "BAD_USER_INPUT"),
        (json!({ "w": "pct", "from": at(0), "to": at(10), "n": 0 }), "BAD_USER_INPUT"),
        (json!({ "w": "pct", "from": at(0), "to": at(10), "n": 101 }), "BAD_USER_INPUT"),
    ] {
        assert_eq!(app.err(ANALYTICS, vars.clone()).await.0, code, "{vars}");
    }
    w
}

/// Materialises the aggregates (TimescaleDB only), so the histograms are read from storage, not computed at read time.
pub async fn materialise(app: &TestApp) {
    if !app.db.store.mode().await.is_ok_and(|m| m.is_timescaledb()) {
        return;
    }
    for view in ["session_stats_hourly", "edge_stats_hourly"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("CALL refresh_continuous_aggregate('{view}', NULL, '{}')", at(7200))))
            .execute(app.db.store.pool())
            .await
            .expect("refresh");
    }
}

#[tokio::test]
async fn workflow_analytics_and_node_percentiles_are_within_the_stated_bound_in_both_modes() {
    let app = TestApp::start(Kind::Default).await;
    let ins = insert(&app).await;
    let real_time = check(&app, &ins).await;
    materialise(&app).await;
    assert_eq!(check(&app, &ins).await, real_time, "materialised histograms answer as real-time ones");
    if let Some(db) = try_test_db(Kind::Plain).await {
        let plain = TestApp::with_db(db, Default::default()).await;
        let ins = insert(&plain).await;
        assert_eq!(check(&plain, &ins).await, real_time, "both modes answer alike");
    }
}
