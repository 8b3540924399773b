//! `dependencyGraph` against the traces the test inserted, in both modes, before and after the aggregate is
//! materialised; bad ranges refused.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::fixtures::{at, record, session, trace};
use crate::harness::{Kind, TestApp, try_test_db};
use crate::percentiles::{assert_within, materialise};

const GRAPH: &str = "query($w: String!, $from: DateTime!, $to: DateTime!) {
    dependencyGraph(workflowId: $w, from: $from, to: $to) {
        edges { edge { sourceNodeId sourcePortId targetNodeId targetPortId } traceCount errorCount errorRate totalDataSize
                duration { p50 p95 p99 } }
        nodes { nodeId inputCount outputCount errorCount bytesIn bytesOut } } }";

type Edge = (String, Option<String>, String, Option<String>);
/// An edge to insert: source, its port, target, its port, how many traces.
type Shape = (&'static str, Option<&'static str>, &'static str, Option<&'static str>, i64);

/// Per edge: durations, errors and bytes of what was inserted.
#[derive(Default)]
struct Expected {
    edges: BTreeMap<Edge, (Vec<f64>, i64, i64)>,
}

async fn insert(app: &TestApp) -> Expected {
    let mut want = Expected::default();
    let mut traces = Vec::new();
    let shape: [Shape; 4] = [
        ("start", Some("out"), "fetch", Some("in"), 40),
        ("fetch", Some("ok"), "parse", Some("in"), 30),
        ("fetch", Some("retry"), "fetch", None, 9),
        ("parse", None, "store", Some("in"), 25),
    ];
    for (k, (from, fp, to, tp, n)) in shape.into_iter().enumerate() {
        for i in 0..n {
            let s = (k as i64) * 100 + i;
            let failed = (i + k as i64) % 7 == 0;
            let mut t = trace(s, if failed { "ERROR" } else { "SUCCESS" }, from, to);
            let ms = 2.0 * (k as f64 + 1.0) * 1.3_f64.powi(i as i32);
            t["duration"] = json!(ms);
            t["source"]["portId"] = json!(fp);
            t["target"]["portId"] = json!(tp);
            t["data"] = json!({ "size": 10 * (i + 1) });
            traces.push(t);
            let e = want.edges.entry((from.into(), fp.map(Into::into), to.into(), tp.map(Into::into))).or_default();
            e.0.push(ms);
            e.1 += i64::from(failed);
            e.2 += 10 * (i + 1);
        }
    }
    let s = session(app, "dg", 0).await;
    record(app, s, traces).await;
    // Another workflow's traces are not part of the graph.
    let other = session(app, "dg-other", 0).await;
    record(app, other, vec![trace(5, "SUCCESS", "start", "fetch")]).await;
    want
}

/// Checks the graph; returns it, to compare modes.
async fn check(app: &TestApp, want: &Expected) -> Value {
    let g = app.ok(GRAPH, json!({ "w": "dg", "from": at(0), "to": at(3599) })).await["dependencyGraph"].clone();
    let edges = g["edges"].as_array().cloned().unwrap_or_default();
    let keys: Vec<Value> = edges
        .iter()
        .map(|e| &e["edge"])
        .map(|e| json!([e["sourceNodeId"], e["sourcePortId"], e["targetNodeId"], e["targetPortId"]]))
        .collect();
    // Sorted as the API sorts: nulls first within a node.
    let mut expected_keys: Vec<&Edge> = want.edges.keys().collect();
    expected_keys.sort_by(|x, y| (&x.0, &x.1, &x.2, &x.3).cmp(&(&y.0, &y.1, &y.2, &y.3)));
    assert_eq!(keys, expected_keys.iter().map(|k| json!([k.0, k.1, k.2, k.3])).collect::<Vec<_>>());
    let mut nodes: BTreeMap<&str, [i64; 5]> = BTreeMap::new();
    for (e, key) in edges.iter().zip(&expected_keys) {
        let (durations, errors, bytes) = &want.edges[*key];
        let n = durations.len() as i64;
        assert_eq!(
            (e["traceCount"].clone(), e["errorCount"].clone(), e["totalDataSize"].clone()),
            (json!(n), json!(errors), json!(bytes)),
            "{key:?}"
        );
        assert_eq!(e["errorRate"], json!(*errors as f64 / n as f64));
        assert_within(&e["duration"], durations, &format!("{key:?}"));
        let source = nodes.entry(&key.0).or_default();
        source[1] += n;
        source[2] += errors;
        source[4] += bytes;
        let target = nodes.entry(&key.2).or_default();
        target[0] += n;
        target[3] += bytes;
    }
    let expected_nodes: Vec<Value> = nodes
        .into_iter()
        .map(|(id, [i, o, e, bi, bo])| {
            json!({ "nodeId": id, "inputCount": i, "outputCount": o, "errorCount": e, "bytesIn": bi, "bytesOut": bo })
        })
        .collect();
    assert_eq!(g["nodes"], json!(expected_nodes));

    let empty = app.ok(GRAPH, json!({ "w": "dg", "from": at(7200), "to": at(9000) })).await;
    assert_eq!(empty["dependencyGraph"], json!({ "edges": [], "nodes": [] }));
    for vars in [
        json!({ "w": "dg", "from": at(0), "to": at(31 * 86_400 + 1) }),
        json!({ "w": "dg", "from": at(1), "to": at(0) }),
    ] {
        assert_eq!(app.err(GRAPH, vars.clone()).await.0, "BAD_USER_INPUT", "{vars}");
    }
    g
}

#[tokio::test]
async fn dependency_graph_sums_the_observed_edges_and_nodes_in_both_modes() {
    let app = TestApp::start(Kind::Default).await;
    let want = insert(&app).await;
    let real_time = check(&app, &want).await;
    materialise(&app).await;
    assert_eq!(check(&app, &want).await, real_time, "materialised histograms answer as real-time ones");
    if let Some(db) = try_test_db(Kind::Plain).await {
        let plain = TestApp::with_db(db, Default::default()).await;
        let want = insert(&plain).await;
        assert_eq!(check(&plain, &want).await, real_time, "both modes answer alike");
    }
}
