//! `flowtrace seed` writes realistic data through the ingest path.

use serde_json::json;

use crate::harness::{Kind, TestApp};

#[tokio::test]
async fn seed_writes_sessions_traces_and_events_of_several_workflows() {
    let app = TestApp::start(Kind::Default).await;
    flowtrace::seed::seed(&app.db.store, 9, 40).await.expect("seed");
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_trace_sessions").await, 9);
    assert_eq!(app.scalar_i64("SELECT count(DISTINCT workflow_id) FROM flow_trace_sessions").await, 3);
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces").await, 360);
    assert!(app.scalar_i64("SELECT count(*) FROM flow_trace_events").await > 0);
    // Most end as an engine's runs do (completed, some failed or cancelled), after their last trace; two still run.
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_trace_sessions WHERE status = 'RUNNING'").await, 2);
    assert_eq!(
        app.scalar_i64(
            "SELECT count(*) FROM flow_trace_sessions s WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED')
             AND end_time >= (SELECT max(timestamp) FROM flow_traces t WHERE t.session_id = s.id)"
        )
        .await,
        7
    );
    assert_eq!(
        app.scalar_i64("SELECT count(*) FROM flow_trace_sessions WHERE status = 'RUNNING' AND end_time IS NULL").await,
        2
    );
    assert!(app.scalar_i64("SELECT count(DISTINCT target_node_id) FROM flow_traces").await >= 10, "branching graphs");
    // Every session's summary was kept by ingestion, and the data serves the dashboards' queries.
    let data =
        app.ok("{ sessions(first: 20) { totalCount edges { node { summary { totalTraces } } } } }", json!({})).await;
    assert_eq!(data["sessions"]["totalCount"], 9);
    for edge in data["sessions"]["edges"].as_array().expect("edges") {
        assert_eq!(edge["node"]["summary"]["totalTraces"], 40);
    }
    let wf = app
        .ok(
            "{ workflowStateAt(workflowId: \"etl-pipeline\", at: \"2100-01-01T00:00:00Z\") { nodes { nodeId } } }",
            json!({}),
        )
        .await;
    assert!(wf["workflowStateAt"]["nodes"].as_array().is_some_and(|n| n.len() == 5));
}
