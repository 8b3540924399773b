//! `sessionReport` on a session whose answer is known, in both modes; bad arguments refused.

use serde_json::{Value, json};

use crate::fixtures::{at, record, session, trace};
use crate::harness::{Kind, TestApp, try_test_db};

const REPORT: &str = "query($s: ID!, $n: Int) { sessionReport(sessionId: $s, slowest: $n) {
    session { id } totalTraces successCount errorCount successRate
    slowest { id duration }
    errorsByCode { key count sampleMessage }
    errorsByNode { key count sampleMessage }
    nodes { nodeId firstInput lastOutput inputCount outputCount busyMs } } }";

fn shaped(
    id: &str,
    s: i64,
    status: &str,
    from: &str,
    to: &str,
    ms: Option<f64>,
    error: Option<(Option<&str>, &str)>,
) -> Value {
    let mut t = trace(s, status, from, to);
    t["id"] = json!(id);
    t["duration"] = json!(ms);
    if let Some((code, message)) = error {
        t["error"] = json!({ "code": code, "message": message });
    }
    t
}

async fn check(app: &TestApp) {
    let s = session(app, "report", 0).await;
    record(
        app,
        s,
        vec![
            shaped("t1", 1, "SUCCESS", "a", "b", Some(10.0), None),
            shaped("t2", 2, "ERROR", "b", "c", Some(50.0), Some((Some("E1"), "first"))),
            shaped("t3", 3, "ERROR", "b", "c", Some(30.0), Some((Some("E1"), "second"))),
            shaped("t4", 4, "ERROR", "c", "d", Some(5.0), Some((None, "third"))),
            shaped("t5", 5, "SUCCESS", "a", "b", None, None),
        ],
    )
    .await;
    let data = app.ok(REPORT, json!({ "s": s, "n": 2 })).await;
    let node = |id: &str, first: Option<i64>, last: Option<i64>, inputs: i64, outputs: i64, busy: f64| {
        json!({ "nodeId": id, "firstInput": first.map(at), "lastOutput": last.map(at), "inputCount": inputs,
                "outputCount": outputs, "busyMs": busy })
    };
    assert_eq!(
        data["sessionReport"],
        json!({
            "session": { "id": s }, "totalTraces": 5, "successCount": 2, "errorCount": 3, "successRate": 0.4,
            "slowest": [{ "id": "t2", "duration": 50.0 }, { "id": "t3", "duration": 30.0 }],
            "errorsByCode": [{ "key": "E1", "count": 2, "sampleMessage": "first" },
                             { "key": null, "count": 1, "sampleMessage": "third" }],
            "errorsByNode": [{ "key": "b", "count": 2, "sampleMessage": "first" },
                             { "key": "c", "count": 1, "sampleMessage": "third" }],
            "nodes": [node("a", None, Some(5), 0, 2, 10.0), node("b", Some(1), Some(3), 2, 2, 80.0),
                      node("c", Some(2), Some(4), 2, 1, 5.0), node("d", Some(4), None, 1, 0, 0.0)],
        })
    );
    let empty = session(app, "report", 100).await;
    let data = app.ok(REPORT, json!({ "s": empty })).await;
    assert_eq!(data["sessionReport"]["successRate"], Value::Null, "no traces, no rate");
    assert_eq!(data["sessionReport"]["nodes"], json!([]));

    for (vars, code) in [
        (json!({ "s": s, "n": 0 }), "BAD_USER_INPUT"),
        (json!({ "s": s, "n": 101 }), "BAD_USER_INPUT"),
        (json!({ "s": "no-such-session" }), "NOT_FOUND"),
    ] {
        assert_eq!(app.err(REPORT, vars.clone()).await.0, code, "{vars}");
    }
}

#[tokio::test]
async fn session_report_lists_slowest_traces_errors_and_node_timing_in_both_modes() {
    check(&TestApp::start(Kind::Default).await).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check(&TestApp::with_db(db, Default::default()).await).await;
    }
}
