//! Payloads and error stacks go only to callers with the reveal scope; the others get null and `redacted`, over
//! queries, time travel and subscriptions alike.

use chrono::Utc;
use flowtrace::auth::{AuthArgs, hash_api_key};
use flowtrace::config::ServeArgs;
use serde_json::{Value, json};

use crate::harness::{Kind, TestApp, test_db};
use crate::ws_client::{TRANSPORT_WS, WsClient};

const SECRET: &str = "redaction-secret-with-enough-entropy-0123456789";
const READ: &str = "query($s: ID!) {
    traces(sessionId: $s) { edges { node { data { payload preview redacted } error { message stack redacted } } } }
    sessionStateAt(sessionId: $s, at: \"2100-01-01T00:00:00Z\") { nodes { nodeId lastError { stack redacted } } } }";

fn jwt(claims: Value) -> String {
    let mut claims = claims;
    claims["exp"] = json!(Utc::now().timestamp() + 600);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn call(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let req = app.http.post(format!("{}/graphql", app.base)).json(&json!({ "query": query, "variables": variables }));
    let body: Value =
        req.header("Authorization", format!("Bearer {token}")).send().await.expect("sent").json().await.expect("json");
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

/// What a caller sees of the failed trace (with payload and stack) and of the plain one (with neither).
fn seen(data: &Value) -> (Value, Value, Value) {
    let failed = &data["traces"]["edges"][0]["node"];
    let plain = &data["traces"]["edges"][1]["node"];
    let node = data["sessionStateAt"]["nodes"].as_array().and_then(|n| n.iter().find(|n| n["nodeId"] == "a")).cloned();
    (
        json!([failed["data"], failed["error"]]),
        json!([plain["data"]["redacted"], plain["error"]]),
        node.map_or(Value::Null, |n| n["lastError"].clone()),
    )
}

#[tokio::test]
async fn payloads_and_stacks_go_only_to_callers_who_may_see_them() {
    let auth = AuthArgs {
        jwt_secret: Some(SECRET.into()),
        api_keys: vec![
            format!("read:{}", hash_api_key("read-key")),
            format!("reveal:{}", hash_api_key("reveal-key")),
            format!("write:{}", hash_api_key("write-key")),
        ],
        ..Default::default()
    };
    let app = TestApp::with_db(test_db(Kind::Default).await, ServeArgs { auth, ..Default::default() }).await;
    let writer = jwt(json!({ "role": "service_role", "sub": "svc" }));
    let start = "mutation { startSession(input: { workflowId: \"wf\", workflowName: \"Flow\" }) { id } }";
    let s = call(&app, &writer, start, json!({})).await["startSession"]["id"].clone();
    let traces = json!([
        { "id": "t1", "timestamp": "2026-12-01T10:00:00Z", "status": "ERROR", "source": { "nodeId": "a" },
          "target": { "nodeId": "b" }, "data": { "payload": { "secret": 42 }, "preview": "{secret}" },
          "error": { "message": "boom", "stack": "at secret.rs:1" } },
        { "id": "t2", "timestamp": "2026-12-01T10:00:01Z", "status": "SUCCESS", "source": { "nodeId": "b" },
          "target": { "nodeId": "c" }, "data": { "preview": "nothing" } },
    ]);
    let record = "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }";
    call(&app, &writer, record, json!({ "s": s, "t": traces })).await;

    let visible = (
        json!([{ "payload": { "secret": 42 }, "preview": "{secret}", "redacted": false },
               { "message": "boom", "stack": "at secret.rs:1", "redacted": false }]),
        json!([false, null]),
        json!({ "stack": "at secret.rs:1", "redacted": false }),
    );
    let hidden = (
        json!([{ "payload": null, "preview": "{secret}", "redacted": true },
               { "message": "boom", "stack": null, "redacted": true }]),
        json!([false, null]),
        json!({ "stack": null, "redacted": true }),
    );
    // Each user is granted the workflow, so each sees its traces: what differs is what it sees of them.
    let user = jwt(json!({ "role": "authenticated", "sub": "u1", "app_metadata": { "workflows": ["wf"] } }));
    let revealed_user = jwt(json!({ "role": "authenticated", "sub": "u2",
                                    "app_metadata": { "flowtrace_reveal": true, "workflows": ["wf"] } }));
    let not_quite = jwt(json!({ "role": "authenticated", "sub": "u3",
                                "app_metadata": { "flowtrace_reveal": "yes", "workflows": ["wf"] } }));
    for (who, token, want) in [
        ("service_role", writer.as_str(), &visible),
        ("authenticated", user.as_str(), &hidden),
        ("authenticated with the reveal claim", revealed_user.as_str(), &visible),
        ("a reveal claim that is not true", not_quite.as_str(), &hidden),
        ("read key", "read-key", &hidden),
        ("reveal key", "reveal-key", &visible),
        ("write key", "write-key", &visible),
    ] {
        assert_eq!(&seen(&call(&app, token, READ, json!({ "s": s })).await), want, "{who}");
    }

    // A subscription withholds them too.
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, json!({ "Authorization": format!("Bearer {user}") })).await;
    ws.subscribe(
        "subscription($s: ID) { traces(sessionId: $s) { node { data { payload redacted } error { stack redacted } } } }",
        json!({ "s": s }),
    )
    .await;
    let first = ws.next_data().await;
    assert_eq!(
        first["traces"]["node"],
        json!({ "data": { "payload": null, "redacted": true }, "error": { "stack": null, "redacted": true } })
    );
}
