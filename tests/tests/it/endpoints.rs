//! What a newcomer meets first: `/`, `GET /graphql` in a browser, GraphiQL's example, `/metrics`.

use serde_json::{Value, json};

use crate::fixtures::{RECORD, session, trace};
use crate::harness::{Kind, TestApp, test_db};
use flowtrace::config::ServeArgs;

#[tokio::test]
async fn root_leads_to_graphiql_and_a_plain_get_of_graphql_says_what_to_do() {
    let app = TestApp::start(Kind::Default).await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let res = no_redirects.get(format!("{}/", app.base)).send().await.expect("GET /");
    assert!(res.status().is_redirection(), "{}", res.status());
    assert_eq!(res.headers()["location"], "/graphiql");

    let res = app.http.get(format!("{}/graphql", app.base)).send().await.expect("GET /graphql");
    assert_eq!(res.status(), 400);
    assert!(res.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("application/json")));
    let body: Value = res.json().await.expect("a JSON GraphQL error");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("POST /graphql")), "{body}");

    let (status, page) = app.get("/graphiql").await;
    assert_eq!(status, 200);
    let page = page.as_str().unwrap_or_default();
    assert!(page.contains("query LatestSessions") && page.contains("summary {"), "opens on the sessions example");
    assert!(page.contains("# subscription LiveTraces"), "with the live-traces subscription, commented");

    let off =
        TestApp::with_db(test_db(Kind::Default).await, ServeArgs { no_graphiql: true, ..Default::default() }).await;
    let res = no_redirects.get(format!("{}/", off.base)).send().await.expect("GET /");
    assert_eq!(res.status(), 404, "no GraphiQL, nothing to lead to");
}

/// The value of one sample line (`name{labels} value`) of the Prometheus text, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_describe_themselves_and_count_ingest() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let scrape = || async { app.get("/metrics").await.1.as_str().unwrap_or_default().to_owned() };
    let before = scrape().await;
    for name in ["flowtrace_ingest_rows_total", "flowtrace_ingest_duplicates_total", "flowtrace_ingest_batches_total"] {
        assert!(before.contains(&format!("# HELP {name} ")), "/metrics shows {name} from the start:\n{before}");
    }
    let rows = r#"flowtrace_ingest_rows_total{kind="traces"}"#;
    let duplicates = r#"flowtrace_ingest_duplicates_total{kind="traces"}"#;
    let batches = r#"flowtrace_ingest_batches_total{kind="traces"}"#;
    let refused = r#"flowtrace_ingest_refused_total{kind="traces",reason="bad_input"}"#;

    let batch: Vec<Value> = (0..10).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    app.ok(RECORD, json!({ "s": s, "t": batch })).await;
    app.ok(RECORD, json!({ "s": s, "t": batch })).await;
    let mut bad = batch.clone();
    bad[0]["duration"] = json!(-1.0);
    app.err(RECORD, json!({ "s": s, "t": bad })).await;

    // Other tests in this process may ingest meanwhile: at least ours are counted.
    let after = scrape().await;
    for name in ["flowtrace_ingest_refused_total", "flowtrace_graphql_requests_total", "flowtrace_db_pool_connections"]
    {
        assert!(after.contains(&format!("# HELP {name} ")), "/metrics lacks HELP for {name}:\n{after}");
    }
    assert!(sample(&after, rows) - sample(&before, rows) >= 10.0, "rows stored:\n{after}");
    assert!(sample(&after, duplicates) - sample(&before, duplicates) >= 10.0, "duplicates:\n{after}");
    assert!(sample(&after, batches) - sample(&before, batches) >= 2.0, "batches:\n{after}");
    assert!(sample(&after, refused) - sample(&before, refused) >= 1.0, "refused:\n{after}");
}
