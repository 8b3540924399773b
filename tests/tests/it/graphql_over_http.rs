//! The GraphQL over HTTP spec at `/graphql`: media types from `Accept`, status codes by media type, queries over GET,
//! mutations refused over GET, and batches as before.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::START;
use crate::harness::{Kind, TestApp, test_db};
use flowtrace::auth::{AuthArgs, hash_api_key};
use flowtrace::config::ServeArgs;

const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

/// Status, content type and body of a POST with the given `Accept` (none when `None`).
async fn post(app: &TestApp, accept: Option<&str>, body: &str) -> (u16, String, Value) {
    let mut request =
        app.http.post(format!("{}/graphql", app.base)).header("content-type", "application/json").body(body.to_owned());
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    answer(request.send().await.expect("sent")).await
}

async fn get(app: &TestApp, accept: &str, params: &[(&str, &str)]) -> (u16, String, Value) {
    let request = app.http.get(format!("{}/graphql", app.base)).header("accept", accept).query(params);
    answer(request.send().await.expect("sent")).await
}

async fn answer(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = response.json().await.expect("a JSON body");
    (status, content_type, body)
}

#[tokio::test]
async fn the_media_type_follows_accept_and_request_errors_answer_400_only_when_asked_for() {
    let app = TestApp::start(Kind::Default).await;
    let ok = r#"{"query":"{ __typename }"}"#;
    for (accept, expected) in [
        (None, "application/json"),
        (Some("*/*"), "application/json"),
        (Some("application/json"), "application/json"),
        (Some(GRAPHQL_RESPONSE), GRAPHQL_RESPONSE),
        (Some("application/graphql-response+json, application/json;q=0.9"), GRAPHQL_RESPONSE),
    ] {
        let (status, content_type, body) = post(&app, accept, ok).await;
        assert_eq!(status, 200, "{accept:?}");
        assert!(content_type.starts_with(expected), "{accept:?}: {content_type}");
        assert_eq!(body["data"]["__typename"], "Query");
    }

    let unparsable = r#"{"query":"{"}"#;
    let invalid = r#"{"query":"{ noSuchField }"}"#;
    let uncoerced = r#"{"query":"query($id: ID!) { session(id: $id) { id } }","variables":{"id":null}}"#;
    for body in [unparsable, invalid, uncoerced] {
        let (status, _, answer) = post(&app, Some(GRAPHQL_RESPONSE), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.get("data").is_none(), "a request error has no data entry: {answer}");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
        let (status, _, answer) = post(&app, Some("application/json"), body).await;
        assert_eq!(status, 200, "application/json keeps 200 for well-formed requests: {body}");
        assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    }

    // Not a GraphQL request at all: 400 whatever the media type, with a message naming the parameter.
    for (body, names) in [
        (r#"{"qeury":"{ __typename }"}"#, "query"),
        (r#"{"query":0}"#, "query"),
        (r#"{"query":"{ __typename }","variables":"x"}"#, "variables"),
        (r#"{"query":"{ __typename }","extensions":[1]}"#, "extensions"),
        (r#"{"query":"{ __typename }","operationName":false}"#, "operationName"),
        (r#"{ "not json"#, "JSON"),
    ] {
        for accept in [None, Some(GRAPHQL_RESPONSE)] {
            let (status, _, answer) = post(&app, accept, body).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(answer["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
            let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.contains(names), "{body}: {message}");
        }
    }

    // Null optional parameters are absent ones.
    let nulls = r#"{"query":"{ __typename }","variables":null,"operationName":null,"extensions":null}"#;
    let (status, _, answer) = post(&app, Some(GRAPHQL_RESPONSE), nulls).await;
    assert_eq!((status, answer), (200, json!({ "data": { "__typename": "Query" } })));

    // A batch answers each operation, with 200.
    let batch = r#"[{"query":"{ __typename }"},{"query":"{ noSuchField }"}]"#;
    let (status, content_type, answer) = post(&app, Some(GRAPHQL_RESPONSE), batch).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with(GRAPHQL_RESPONSE));
    assert_eq!(answer[0]["data"]["__typename"], "Query");
    assert_eq!(answer[1]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn queries_run_over_get_and_mutations_are_refused_with_405() {
    let app = TestApp::start(Kind::Default).await;
    let query = "query Type($name: String!) { __type(name: $name) { name } }";
    for accept in ["application/json", GRAPHQL_RESPONSE] {
        let params = [("query", query), ("variables", r#"{"name":"Session"}"#), ("operationName", "Type")];
        let (status, content_type, body) = get(&app, accept, &params).await;
        assert_eq!(status, 200, "{body}");
        assert!(content_type.starts_with(accept), "{content_type}");
        assert_eq!(body, json!({ "data": { "__type": { "name": "Session" } } }));
    }
    let with_extensions = [("query", "{ __typename }"), ("extensions", r#"{"some":"value"}"#)];
    assert_eq!(get(&app, GRAPHQL_RESPONSE, &with_extensions).await.0, 200);
    let bad_variables = [("query", query), ("variables", "[1]")];
    let (status, _, body) = get(&app, GRAPHQL_RESPONSE, &bad_variables).await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

    let id = Uuid::new_v4();
    let variables = json!({ "input": { "id": id, "workflowId": "wf", "workflowName": "w" } }).to_string();
    let response = app
        .http
        .get(format!("{}/graphql", app.base))
        .query(&[("query", START), ("variables", variables.as_str())])
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: Value = response.json().await.expect("a GraphQL error");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("POST")), "{body}");
    // The operation the name selects decides, not the first of the document.
    let two = format!("query Q {{ __typename }} {START}");
    let named = [("query", two.as_str()), ("operationName", "Q")];
    assert_eq!(get(&app, "application/json", &named).await.0, 200);

    let data = app.ok("query($id: ID!) { session(id: $id) { id } }", json!({ "id": id })).await;
    assert!(data["session"].is_null(), "the mutation sent over GET did not run");
}

#[tokio::test]
async fn refused_credentials_answer_401_and_403_when_the_client_asks_for_graphql_response_json() {
    let auth = AuthArgs { api_keys: vec![format!("read:{}", hash_api_key("reader-key"))], ..Default::default() };
    let app = TestApp::with_db(test_db(Kind::Default).await, ServeArgs { auth, ..Default::default() }).await;
    let query = json!({ "query": "{ sessions(first: 1) { totalCount } }" }).to_string();
    let (status, _, body) = post(&app, Some(GRAPHQL_RESPONSE), &query).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let (status, _, body) = post(&app, Some("application/json"), &query).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");

    let id = Uuid::new_v4();
    let mutation =
        json!({ "query": START, "variables": { "input": { "id": id, "workflowId": "wf", "workflowName": "w" } } });
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .header("accept", GRAPHQL_RESPONSE)
        .header("authorization", "Bearer reader-key")
        .json(&mutation)
        .send()
        .await
        .expect("sent");
    let (status, _, body) = answer(response).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
}
