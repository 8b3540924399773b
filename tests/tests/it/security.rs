//! Auth (JWT roles, API keys), limits and the bind guard.

use std::time::Duration;

use chrono::Utc;
use flowtrace::auth::{AuthArgs, hash_api_key};
use flowtrace::config::ServeArgs;
use serde_json::{Value, json};

use crate::fixtures::{RECORD, START, trace};
use crate::harness::{Kind, TestApp, test_db};
use crate::ws_client::{Event, TRANSPORT_WS, WsClient};

const SECRET: &str = "test-secret-with-enough-entropy-0123456789";

fn jwt(role: &str, sub: &str, expires_in: i64) -> String {
    let claims =
        json!({ "role": role, "sub": sub, "aud": "authenticated", "exp": Utc::now().timestamp() + expires_in });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn secured_app() -> TestApp {
    let auth = AuthArgs {
        jwt_secret: Some(SECRET.into()),
        api_keys: vec![format!("read:{}", hash_api_key("reader-key")), format!("write:{}", hash_api_key("writer-key"))],
        ..Default::default()
    };
    let args = ServeArgs { auth, ..Default::default() };
    TestApp::with_db(test_db(Kind::Default).await, args).await
}

async fn call(app: &TestApp, auth: Option<&str>, query: &str, variables: Value) -> Value {
    let mut req =
        app.http.post(format!("{}/graphql", app.base)).json(&json!({ "query": query, "variables": variables }));
    if let Some(auth) = auth {
        req = req.header("Authorization", auth);
    }
    req.send().await.expect("sent").json().await.expect("json")
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("none")
}

#[tokio::test]
async fn roles_and_keys_decide_who_reads_and_writes() {
    let app = secured_app().await;
    let start = json!({ "input": { "workflowId": "wf", "workflowName": "Flow" } });
    let list = "{ sessions { totalCount } }";

    assert_eq!(code(&call(&app, None, list, json!({})).await), "UNAUTHENTICATED");
    assert_eq!(code(&call(&app, Some("Bearer nonsense"), list, json!({})).await), "UNAUTHENTICATED");
    let forged = jwt("service_role", "x", 600).replace('.', ".x");
    assert_eq!(code(&call(&app, Some(&format!("Bearer {forged}")), list, json!({})).await), "UNAUTHENTICATED");
    let expired = jwt("service_role", "x", -600);
    assert_eq!(code(&call(&app, Some(&format!("Bearer {expired}")), list, json!({})).await), "UNAUTHENTICATED");

    let reader = format!("Bearer {}", jwt("authenticated", "reader", 600));
    assert!(call(&app, Some(&reader), list, json!({})).await.get("errors").is_none());
    assert_eq!(code(&call(&app, Some(&reader), START, start.clone()).await), "FORBIDDEN");
    let anon = format!("Bearer {}", jwt("anon", "a", 600));
    assert_eq!(code(&call(&app, Some(&anon), list, json!({})).await), "FORBIDDEN");

    let writer = format!("Bearer {}", jwt("service_role", "user-42", 600));
    let started = call(&app, Some(&writer), START, start.clone()).await;
    let id = started["data"]["startSession"]["id"].clone();
    assert!(id.is_string(), "{started}");
    let user = call(&app, Some(&writer), "query($id: ID!) { session(id: $id) { userId } }", json!({ "id": id })).await;
    assert_eq!(user["data"]["session"]["userId"], "user-42", "userId defaults to the token's sub");

    assert!(call(&app, Some("Bearer reader-key"), list, json!({})).await.get("errors").is_none());
    assert_eq!(
        code(
            &call(&app, Some("Bearer reader-key"), RECORD, json!({ "s": id, "t": [trace(1, "SUCCESS", "a", "b")] }))
                .await
        ),
        "FORBIDDEN"
    );
    let written =
        call(&app, Some("Bearer writer-key"), RECORD, json!({ "s": id, "t": [trace(1, "SUCCESS", "a", "b")] })).await;
    assert_eq!(written["data"]["recordTraces"]["accepted"], 1, "{written}");
    assert_eq!(code(&call(&app, Some("Bearer wrong-key"), list, json!({})).await), "UNAUTHENTICATED");
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_trace_sessions").await, 1, "refused writes stored nothing");
}

#[tokio::test]
async fn a_public_bind_without_auth_is_refused_unless_insecure() {
    let db = test_db(Kind::Default).await;
    let mut args = ServeArgs { bind: "0.0.0.0:0".parse().expect("addr"), ..Default::default() };
    let refused = flowtrace::app::spawn(db.store.clone(), args.clone()).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("without authentication"), "{message}");
    args.auth.insecure = true;
    let server = flowtrace::app::spawn(db.store.clone(), args).await.expect("--insecure serves");
    server.shutdown().await.expect("stop");
}

#[tokio::test]
async fn depth_complexity_page_and_body_limits_say_which_limit() {
    let mut args = ServeArgs { body_limit: 64 * 1024, ..Default::default() };
    args.limits.max_depth = 6;
    let app = TestApp::with_db(test_db(Kind::Default).await, args).await;

    let deep = "{ sessions { edges { node { traces { edges { node { source { nodeId } } } } } } } }";
    let (code, message) = app.err(deep, json!({})).await;
    assert_eq!(code, "LIMIT_EXCEEDED");
    assert!(message.contains("max_depth"), "{message}");

    let complex = "{ sessions(first: 1000) { edges { node { id workflowId workflowName status userId startTime
        traces(first: 1000) { edges { cursor } } } } } }";
    let (code, message) = app.err(complex, json!({})).await;
    assert_eq!(code, "LIMIT_EXCEEDED");
    assert!(message.contains("max_complexity"), "{message}");

    let big: Vec<Value> = (0..2000).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    let res = app
        .http
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": RECORD, "variables": { "s": uuid::Uuid::new_v4(), "t": big } }))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status().as_u16(), 413);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED");
}

#[tokio::test]
async fn introspection_and_graphiql_can_be_switched_off() {
    let args = ServeArgs { no_introspection: true, no_graphiql: true, ..Default::default() };
    let app = TestApp::with_db(test_db(Kind::Default).await, args).await;
    let body = app.gql("{ __schema { queryType { name } } }", json!({})).await;
    assert!(body.get("errors").is_some() || body["data"]["__schema"].is_null(), "{body}");
    let (status, _) = app.get("/graphiql").await;
    assert_eq!(status, 404);

    let open = TestApp::start(Kind::Default).await;
    let (status, page) = open.get("/graphiql").await;
    assert_eq!(status, 200);
    let page = page.as_str().expect("html").to_owned();
    assert!(page.contains("GraphiQL"));
    // Offline: every script and style comes from this server.
    assert!(!page.contains("http://") && !page.contains("https://"), "no external assets");
    for asset in ["react.production.min.js", "react-dom.production.min.js", "graphiql.min.js", "graphiql.min.css"] {
        assert!(page.contains(&format!("/graphiql/assets/{asset}")));
        let res = open.http.get(format!("{}/graphiql/assets/{asset}", open.base)).send().await.expect("asset");
        assert_eq!(res.status().as_u16(), 200, "{asset}");
        assert!(res.bytes().await.expect("body").len() > 5_000, "{asset} is the real file");
    }
}

fn signed(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

#[tokio::test]
async fn tokens_not_yet_valid_are_refused_and_the_bearer_scheme_is_case_insensitive() {
    let app = secured_app().await;
    let read = "{ sessions(first: 1) { edges { cursor } } }";
    let now = Utc::now().timestamp();
    let early = signed(json!({ "role": "service_role", "sub": "u", "exp": now + 7200, "nbf": now + 3600 }));
    let body = call(&app, Some(&format!("Bearer {early}")), read, json!({})).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "nbf an hour ahead: {body}");
    let valid = signed(json!({ "role": "authenticated", "sub": "u", "exp": now + 7200, "nbf": now - 1 }));
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let body = call(&app, Some(&format!("{scheme} {valid}")), read, json!({})).await;
        assert!(body.get("errors").is_none(), "{scheme}: {body}");
        let body = call(&app, Some(&format!("{scheme} reader-key")), read, json!({})).await;
        assert!(body.get("errors").is_none(), "{scheme} with an API key: {body}");
    }
    // The same rules over WebSocket, from the connection_init payload.
    for (authorization, accepted) in [(format!("BEARER {valid}"), true), (format!("Bearer {early}"), false)] {
        let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, json!({ "Authorization": authorization })).await;
        ws.subscribe(read, json!({})).await;
        match ws.next_event(Duration::from_secs(30)).await {
            Some(Event::Data(_)) => assert!(accepted, "{authorization} must be refused"),
            Some(Event::Error(errors)) => {
                assert!(!accepted, "{authorization} must be accepted: {errors}");
                assert_eq!(errors[0]["extensions"]["code"], "UNAUTHENTICATED");
            }
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}
