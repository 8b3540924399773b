//! What one HTTP request may ask of the server: only JSON bodies run (CSRF), batches are bounded in operations and
//! summed complexity, database-touching fields cost what they cost, and every string argument has a length limit.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{START, session};
use crate::harness::{Kind, TestApp};

async fn session_exists(app: &TestApp, id: Uuid) -> bool {
    let data = app.ok("query($id: ID!) { session(id: $id) { id } }", json!({ "id": id })).await;
    !data["session"].is_null()
}

#[tokio::test]
async fn only_json_bodies_run_so_no_web_page_can_post_a_mutation() {
    let app = TestApp::start(Kind::Default).await;
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let id = Uuid::new_v4();
        let body =
            json!({ "query": START, "variables": { "input": { "id": id, "workflowId": "wf", "workflowName": "w" } } });
        let mut request = app.http.post(format!("{}/graphql", app.base)).body(body.to_string());
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let answer: Value = response.json().await.expect("a GraphQL-shaped error");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{content_type:?}");
        assert!(!session_exists(&app, id).await, "{content_type:?}: the mutation did not run");
    }
    let id = Uuid::new_v4();
    let body =
        json!({ "query": START, "variables": { "input": { "id": id, "workflowId": "wf", "workflowName": "w" } } });
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    assert!(session_exists(&app, id).await, "a JSON body runs");
}

async fn batch(app: &TestApp, operations: Vec<Value>) -> Vec<Value> {
    let response = app.http.post(format!("{}/graphql", app.base)).json(&operations).send().await.expect("sent");
    response.json::<Vec<Value>>().await.expect("one answer per operation")
}

#[tokio::test]
async fn batches_are_bounded_in_operations_and_their_complexities_add_up() {
    let app = TestApp::start(Kind::Default).await;
    let typename = json!({ "query": "{ __typename }" });
    let answers = batch(&app, vec![typename.clone(); 100]).await;
    assert!(answers.iter().all(|a| a["data"]["__typename"] == "Query"), "100 operations run");
    let answers = batch(&app, vec![typename.clone(); 101]).await;
    assert_eq!(answers.len(), 101);
    for answer in &answers {
        assert_eq!(answer["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED", "{answer}");
        assert!(answer["errors"][0]["message"].as_str().unwrap_or("").contains("max_batch_operations"));
    }

    // Each of these is well under max_complexity alone; forty together are over it, and then none runs, not even
    // the mutation in front of them.
    let heavy = json!({ "query": "{ sessions(first: 1000) { edges { node { id workflowId } } } }" });
    let alone = app.gql(heavy["query"].as_str().expect("query"), json!({})).await;
    assert!(alone.get("errors").is_none(), "one alone runs: {alone}");
    let id = Uuid::new_v4();
    let mut operations = vec![
        json!({ "query": START, "variables": { "input": { "id": id, "workflowId": "wf", "workflowName": "w" } } }),
    ];
    operations.extend(vec![heavy; 40]);
    let answers = batch(&app, operations).await;
    for answer in &answers {
        assert_eq!(answer["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED", "{answer}");
        assert!(answer["errors"][0]["message"].as_str().unwrap_or("").contains("max_complexity"));
    }
    assert!(!session_exists(&app, id).await, "nothing of a refused batch ran");
}

fn aliases(n: usize, field: &str) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("a{i}: {field}")).collect();
    format!("{{ {} }}", fields.join(" "))
}

#[tokio::test]
async fn database_fields_cost_what_they_cost_and_no_request_starves_others() {
    let app = TestApp::start(Kind::Default).await;
    session(&app, "wf-busy", 0).await;
    let flood = aliases(30_000, "health { connected }");
    let (code, message) = app.err(&flood, json!({})).await;
    assert_eq!(code, "LIMIT_EXCEEDED", "{message}");
    assert!(message.contains("max_complexity"), "{message}");

    // As many health checks as the limit allows, from several clients at once, while others query: everyone is
    // answered (within a generous deadline; speed is the benchmark's business).
    let most = aliases(90, "health { connected }");
    let ok = app.gql(&most, json!({})).await;
    assert!(ok.get("errors").is_none(), "{ok}");
    let mut heavy = Vec::new();
    for _ in 0..4 {
        let client = TestApp::client_for(app.base.clone());
        let (flood, most) = (flood.clone(), most.clone());
        heavy.push(tokio::spawn(async move {
            client.gql(&flood, json!({})).await;
            client.gql(&most, json!({})).await
        }));
    }
    let mut others = Vec::new();
    for _ in 0..20 {
        let client = TestApp::client_for(app.base.clone());
        others.push(tokio::spawn(async move {
            client.gql("{ sessions(first: 10) { edges { node { id } } } }", json!({})).await
        }));
    }
    for other in others {
        let answer = tokio::time::timeout(Duration::from_secs(60), other).await.expect("answered").expect("task");
        assert_eq!(answer["data"]["sessions"]["edges"].as_array().map(Vec::len), Some(1), "{answer}");
    }
    for task in heavy {
        let answer = task.await.expect("task");
        assert!(answer.get("errors").is_none(), "{answer}");
    }
}

#[tokio::test]
async fn every_string_argument_has_a_length_limit_named_in_the_refusal() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf-long", 0).await;
    let long = "x".repeat(2 * 1024 * 1024);
    for (query, vars, argument) in [
        (
            "query($q: String) { sessions(filter: { search: $q }) { edges { cursor } } }",
            json!({ "q": long }),
            "sessions(filter).search",
        ),
        (
            "query($s: ID!, $n: String) { traces(sessionId: $s, nodeId: $n) { edges { cursor } } }",
            json!({ "s": s, "n": long }),
            "traces(nodeId)",
        ),
        (
            "query($w: String) { traces(workflowId: $w) { edges { cursor } } }",
            json!({ "w": long }),
            "traces(workflowId)",
        ),
        (
            "query($s: ID!, $a: String) { traces(sessionId: $s, after: $a) { edges { cursor } } }",
            json!({ "s": s, "a": long }),
            "traces(after)",
        ),
        (
            "query($w: String!) { workflowStateAt(workflowId: $w, at: \"2024-01-01T00:00:00Z\") { at } }",
            json!({ "w": long }),
            "workflowStateAt(workflowId)",
        ),
    ] {
        let (code, message) = app.err(query, vars).await;
        assert_eq!(code, "LIMIT_EXCEEDED", "{argument}: {message}");
        assert!(message.contains(argument) && message.contains("max_name_chars"), "{message}");
    }
    // Up to the limit is fine.
    let search = "query($q: String) { sessions(filter: { search: $q }) { edges { cursor } } }";
    app.ok(search, json!({ "q": "x".repeat(512) })).await;
}
