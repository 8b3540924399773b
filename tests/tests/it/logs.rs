//! What a real `flowtrace serve` process logs, and what it counts of that.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{RECORD, START, at, trace};
use crate::process::{Server, TempFolder};
use crate::ws_client::{TRANSPORT_WS, WsClient};

/// Lines below the level are neither written nor counted as dropped by the limit on repeated lines. The WebSocket
/// library logs each socket read and write below the default level, so one subscription's traffic makes many more
/// such lines than a callsite's burst.
#[tokio::test]
async fn lines_below_the_level_are_not_counted_as_dropped() {
    let folder = TempFolder::new("logs");
    let server = Server::start(&folder.0, &folder.0.join("data")).await;
    let http = reqwest::Client::new();
    let gql = |query: &'static str, variables: Value| {
        let request =
            http.post(format!("{}/graphql", server.base)).json(&json!({ "query": query, "variables": variables }));
        async move {
            let body: Value = request.send().await.expect("request").json().await.expect("JSON");
            assert!(body["errors"].is_null(), "{body}");
            body
        }
    };
    let session = Uuid::new_v4();
    gql(START, json!({ "input": { "id": session, "workflowId": "logs", "workflowName": "logs", "startTime": at(0) } }))
        .await;
    let mut ws = WsClient::connect(&server.base, TRANSPORT_WS, json!({})).await;
    ws.subscribe("subscription($s: ID) { traces(sessionId: $s) { node { id } } }", json!({ "s": session })).await;
    for s in 1..=40 {
        gql(RECORD, json!({ "s": session, "t": [trace(s, "SUCCESS", "a", "b")] })).await;
    }
    assert_eq!(ws.take(40).await.len(), 40);

    let metrics =
        http.get(format!("{}/metrics", server.base)).send().await.expect("metrics").text().await.expect("text");
    let dropped: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("flowtrace_log_lines_dropped_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let log = server.stop().await;
    assert_eq!(dropped, 0.0, "no line was dropped; the log:\n{log}");
    assert!(!log.contains("TRACE") && !log.contains("DEBUG"), "nothing below the level is written:\n{log}");
}
