//! Persisted queries: Apollo's automatic persisted queries over POST and GET, and the trusted-documents mode where
//! only a manifest's documents run (over WebSocket too).

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::fixtures::START;
use crate::harness::{Kind, TestApp, test_db};
use crate::process::TempFolder;
use crate::ws_client::{Event, TRANSPORT_WS, WsClient};
use flowtrace::config::ServeArgs;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn extension(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// Status, `Cache-Control` and body of a POST.
async fn post(app: &TestApp, accept: &str, body: Value) -> (u16, Option<String>, Value) {
    let request = app.http.post(format!("{}/graphql", app.base)).header("accept", accept).json(&body);
    answer(request.send().await.expect("sent")).await
}

async fn get(app: &TestApp, params: &[(&str, &str)]) -> (u16, Option<String>, Value) {
    let request = app.http.get(format!("{}/graphql", app.base)).header("accept", GRAPHQL_RESPONSE).query(params);
    answer(request.send().await.expect("sent")).await
}

async fn answer(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let cache = response.headers().get("cache-control").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, cache, response.json().await.expect("JSON"))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn automatic_persisted_queries_register_on_a_miss_by_post_and_get() {
    let app = TestApp::start(Kind::Default).await;
    let query = "query Named { __typename }";
    let hash = sha256(query);

    // A hash alone: unknown, answered the way Apollo's clients expect, and never cached on the way.
    let (status, cache, body) = post(&app, GRAPHQL_RESPONSE, json!({ "extensions": extension(&hash) })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert!(cache.is_some_and(|c| c.contains("no-cache")));

    // The document with its hash runs and registers; then the hash alone runs it, by POST and GET.
    let (status, _, body) =
        post(&app, GRAPHQL_RESPONSE, json!({ "query": query, "extensions": extension(&hash) })).await;
    assert_eq!((status, &body), (200, &json!({ "data": { "__typename": "Query" } })));
    let (_, _, body) = post(&app, "application/json", json!({ "extensions": extension(&hash) })).await;
    assert_eq!(body, json!({ "data": { "__typename": "Query" } }));
    let extensions = extension(&hash).to_string();
    let (status, _, body) = get(&app, &[("extensions", &extensions)]).await;
    assert_eq!((status, &body), (200, &json!({ "data": { "__typename": "Query" } })));

    // GET registers too (Apollo's useGETForHashedQueries).
    let other = "{ __type(name: \"Session\") { name } }";
    let other_extensions = extension(&sha256(other)).to_string();
    let (_, _, body) = get(&app, &[("extensions", &other_extensions)]).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND");
    let (status, _, _) = get(&app, &[("query", other), ("extensions", &other_extensions)]).await;
    assert_eq!(status, 200);
    let (_, _, body) = get(&app, &[("extensions", &other_extensions)]).await;
    assert_eq!(body["data"]["__type"]["name"], "Session");

    // A hash that is not the document's is refused, and does not register.
    let wrong = extension(&sha256("{ something else }"));
    let (status, _, body) = post(&app, GRAPHQL_RESPONSE, json!({ "query": query, "extensions": wrong })).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(code(&body), "BAD_USER_INPUT");
    let (_, _, body) = post(&app, GRAPHQL_RESPONSE, json!({ "extensions": wrong })).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND");
    for malformed in
        [json!({ "version": 2, "sha256Hash": hash }), json!({ "version": 1, "sha256Hash": "xyz" }), json!(1)]
    {
        let body = json!({ "query": query, "extensions": { "persistedQuery": malformed } });
        let (status, _, body) = post(&app, GRAPHQL_RESPONSE, body).await;
        assert_eq!((status, code(&body)), (400, "BAD_USER_INPUT"), "{body}");
    }

    // A mutation registered by POST is still refused over GET by its hash.
    let id = Uuid::new_v4();
    let variables = json!({ "input": { "id": id, "workflowId": "wf", "workflowName": "w" } });
    let start = extension(&sha256(START));
    let (_, _, body) =
        post(&app, GRAPHQL_RESPONSE, json!({ "query": START, "variables": variables, "extensions": start })).await;
    assert!(body.get("errors").is_none(), "{body}");
    let variables = json!({ "input": { "id": Uuid::new_v4(), "workflowId": "wf", "workflowName": "w" } }).to_string();
    let (status, _, _) = get(&app, &[("extensions", &start.to_string()), ("variables", &variables)]).await;
    assert_eq!(status, 405);

    // Batches resolve each operation.
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .json(&json!([{ "extensions": extension(&hash) }, { "extensions": extension(&sha256("{ nope }")) }]))
        .send()
        .await
        .expect("sent");
    let answers: Value = response.json().await.expect("JSON");
    assert_eq!(answers[0]["data"]["__typename"], "Query");
    assert_eq!(code(&answers[1]), "PERSISTED_QUERY_NOT_FOUND");
}

#[tokio::test]
async fn automatic_persisted_queries_can_be_switched_off() {
    let args = ServeArgs { persisted_queries: 0, ..Default::default() };
    let app = TestApp::with_db(test_db(Kind::Default).await, args).await;
    let query = "{ __typename }";
    let (_, _, body) = post(&app, GRAPHQL_RESPONSE, json!({ "extensions": extension(&sha256(query)) })).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_SUPPORTED");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotSupported");
    let body = json!({ "query": query, "extensions": extension(&sha256(query)) });
    let (status, _, body) = post(&app, GRAPHQL_RESPONSE, body).await;
    assert_eq!((status, &body), (200, &json!({ "data": { "__typename": "Query" } })), "the document still runs");
}

async fn trusted_app(manifest: &Value, folder: &TempFolder) -> TestApp {
    let path = folder.0.join("manifest.json");
    std::fs::write(&path, manifest.to_string()).expect("manifest written");
    let args = ServeArgs { trusted_documents: Some(path), ..Default::default() };
    TestApp::with_db(test_db(Kind::Default).await, args).await
}

#[tokio::test]
async fn with_trusted_documents_only_the_manifests_documents_run() {
    let listed = "query Listed { __typename }";
    let folder = TempFolder::new("trusted-documents");
    let plain = json!({ sha256(listed): listed });
    let apollo = json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{ "id": sha256(listed), "name": "Listed", "type": "query", "body": listed }],
    });
    for manifest in [plain, apollo] {
        let app = trusted_app(&manifest, &folder).await;
        let ok = json!({ "data": { "__typename": "Query" } });
        let (status, _, body) = post(&app, GRAPHQL_RESPONSE, json!({ "extensions": extension(&sha256(listed)) })).await;
        assert_eq!((status, &body), (200, &ok), "by hash");
        let (_, _, body) = post(&app, GRAPHQL_RESPONSE, json!({ "query": listed })).await;
        assert_eq!(body, ok, "by identical text");
        let (_, _, body) = get(&app, &[("query", listed)]).await;
        assert_eq!(body, ok, "over GET");

        let unlisted = "{ __typename }";
        let (status, _, body) = post(&app, GRAPHQL_RESPONSE, json!({ "query": unlisted })).await;
        assert_eq!((status, code(&body)), (403, "PERSISTED_QUERY_NOT_IN_LIST"), "{body}");
        assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("FLOWTRACE_TRUSTED_DOCUMENTS")));
        let (status, _, body) = post(&app, "application/json", json!({ "query": unlisted })).await;
        assert_eq!((status, code(&body)), (200, "PERSISTED_QUERY_NOT_IN_LIST"));
        // Apollo's registration flow ends at the same refusal: the hash is unknown, and the document not listed.
        let hash = extension(&sha256(unlisted));
        let (_, _, body) = post(&app, GRAPHQL_RESPONSE, json!({ "extensions": hash })).await;
        assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND");
        let (_, _, body) = post(&app, GRAPHQL_RESPONSE, json!({ "query": unlisted, "extensions": hash })).await;
        assert_eq!(code(&body), "PERSISTED_QUERY_NOT_IN_LIST");

        let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
        ws.subscribe(unlisted, json!({})).await;
        match ws.next_event(Duration::from_secs(10)).await {
            Some(Event::Error(errors)) => assert_eq!(errors[0]["extensions"]["code"], "PERSISTED_QUERY_NOT_IN_LIST"),
            other => panic!("expected a refusal over WebSocket, got {other:?}"),
        }
        assert!(matches!(ws.next_event(Duration::from_secs(10)).await, Some(Event::Complete)));
        ws.subscribe(listed, json!({})).await;
        assert_eq!(ws.next_data().await, ok["data"]);
    }

    let bad = folder.0.join("bad.json");
    std::fs::write(&bad, "[1]").expect("written");
    let args =
        ServeArgs { trusted_documents: Some(bad), bind: "127.0.0.1:0".parse().expect("addr"), ..Default::default() };
    let refused = flowtrace::app::spawn(test_db(Kind::Default).await.store, args).await;
    assert!(refused.is_err_and(|err| format!("{err:#}").contains("bad.json")), "a bad manifest stops startup");
}
