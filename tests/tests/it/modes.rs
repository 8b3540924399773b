//! Plain mode (no TimescaleDB) serves the same API; health reports the mode from the catalog.

use serde_json::json;

use crate::fixtures::{record, session, trace};
use crate::harness::{Kind, TestApp, try_test_db};

#[tokio::test]
async fn plain_mode_serves_the_same_api() {
    let Some(db) = try_test_db(Kind::Plain).await else {
        return;
    };
    let mode = db.store.mode().await.expect("mode");
    assert_eq!(mode.name(), "PLAIN");
    let reason = mode.describe();
    assert!(
        reason.contains("not installed") || reason.contains("shared_preload_libraries"),
        "the mode line says why: {reason}"
    );
    let app = TestApp::with_db(db, Default::default()).await;

    let (status, health) = app.get("/api/health/timescaledb").await;
    assert_eq!(status, 200);
    assert_eq!(health["mode"], "PLAIN");
    assert_eq!(health["connected"], true);
    assert_eq!(health["hypertables"], json!(0));
    assert_eq!(health["hypertableNames"], json!([]));
    assert_eq!(health["continuousAggregates"], json!(0));
    assert_eq!(health["compressionEnabled"], false);
    assert_eq!(health["version"], json!(""));

    let s = session(&app, "wf", 0).await;
    record(&app, s, vec![trace(1, "SUCCESS", "a", "b"), trace(2, "ERROR", "b", "c")]).await;
    let data = app.ok("query($s: ID!) { traces(sessionId: $s) { totalCount } }", json!({ "s": s })).await;
    assert_eq!(data["traces"]["totalCount"], 2);
    // The aggregate names exist as views computed on the fly.
    let n = app.scalar_i64("SELECT sum(trace_count)::bigint FROM node_performance_hourly").await;
    assert_eq!(n, 2);
    let n = app.scalar_i64("SELECT sum(sessions)::bigint FROM session_stats_daily").await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn health_reports_what_the_catalog_holds() {
    let mut app = TestApp::start(Kind::Default).await;
    let (status, health) = app.get("/api/health/timescaledb").await;
    assert_eq!(status, 200);
    assert_eq!(health["connected"], true);
    if app.db.timescaledb {
        assert_eq!(health["mode"], "TIMESCALEDB");
        assert_eq!(health["hypertableNames"], json!(["flow_trace_events", "flow_trace_sessions", "flow_traces"]));
        assert_eq!(health["hypertables"], json!(3));
        assert_eq!(health["compressionEnabled"], true);
        assert_eq!(
            health["continuousAggregateNames"],
            json!([
                "edge_duration_histograms_hourly",
                "edge_stats_hourly",
                "session_duration_histograms_hourly",
                "session_stats_daily",
                "session_stats_hourly"
            ])
        );
        assert_eq!(health["continuousAggregates"], json!(5));
        assert!(health["version"].as_str().is_some_and(|v| v.starts_with('2')));
    } else {
        crate::harness::skipped("TimescaleDB part of health_reports_what_the_catalog_holds: extension not installed");
        assert_eq!(health["mode"], "PLAIN");
        assert_eq!((health["hypertables"].clone(), health["continuousAggregates"].clone()), (json!(0), json!(0)));
        assert_eq!(health["version"], json!(""));
    }
    // The replaced service's contract: these five fields with these types, whatever the mode.
    assert!(health["connected"].is_boolean());
    assert!(health["version"].is_string());
    assert!(health["hypertables"].is_u64());
    assert!(health["compressionEnabled"].is_boolean());
    assert!(health["continuousAggregates"].is_u64());
    assert!(health["postgresVersion"].is_string());
    let data = app.ok("{ health { connected mode hypertables jobsFailing } }", json!({})).await;
    assert_eq!(data["health"]["mode"], health["mode"]);
    assert_eq!(data["health"]["hypertables"], health["hypertableNames"]);

    let (status, body) = app.get("/readyz").await;
    assert_eq!((status, body["ready"].clone()), (200, json!(true)));
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);

    app.shutdown().await;
    assert!(app.http.get(format!("{}/healthz", app.base)).send().await.is_err(), "stopped listening");
}
