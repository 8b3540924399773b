//! Subscriptions over HTTP multipart (Apollo's protocol): stored then live traces as `payload` parts, `{}`
//! keep-alives, and the closing delimiter when the operation ends.

use std::time::Duration;

use flowtrace::config::ServeArgs;
use flowtrace::limits::Limits;
use serde_json::{Value, json};

use crate::fixtures::{record, session, trace};
use crate::harness::{Kind, TestApp, test_db};
use crate::live::TRACES_SUB;

const ACCEPT: &str = r#"multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json"#;

pub(crate) struct Parts {
    response: reqwest::Response,
    buffer: String,
}

impl Parts {
    async fn open(app: &TestApp, body: Value) -> Parts {
        Parts::open_as(app, None, body).await
    }

    pub(crate) async fn open_as(app: &TestApp, authorization: Option<&str>, body: Value) -> Parts {
        let mut request = app.http.post(format!("{}/graphql", app.base));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response =
            request.header("accept", ACCEPT).header("accept-encoding", "gzip").json(&body).send().await.expect("sent");
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap_or_default();
        assert!(content_type.starts_with("multipart/mixed") && content_type.contains("subscriptionSpec=1.0"));
        assert!(response.headers().get("content-encoding").is_none(), "a stream is never compressed");
        Parts { response, buffer: String::new() }
    }

    /// The next part's JSON, `None` at the closing delimiter or the end of the body.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if self.buffer.starts_with("\r\n--graphql--") {
                return None;
            }
            // A part is complete once the next boundary arrives.
            if let Some(start) = self.buffer.find("\r\n--graphql")
                && let Some(len) = self.buffer[start + 11..].find("\r\n--graphql")
            {
                let part: String = self.buffer.drain(..start + 11 + len).collect();
                let json = part[start + 11..].split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
                // The boundary that ends this part stays as the start of the next.
                return Some(serde_json::from_str(json).expect("a JSON part"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk()).await.ok()?;
            match chunk.ok()? {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => return None,
            }
        }
    }

    /// The next `payload`, skipping keep-alives.
    pub(crate) async fn payload(&mut self) -> Value {
        loop {
            let part = self.next().await.expect("a part");
            if part != json!({}) {
                return part["payload"].clone();
            }
        }
    }
}

#[tokio::test]
async fn subscriptions_answer_multipart_parts_with_keepalives_until_the_closing_delimiter() {
    let limits = Limits { ws_keepalive_secs: 1, ..Default::default() };
    let app = TestApp::with_db(test_db(Kind::Default).await, ServeArgs { limits, ..Default::default() }).await;
    let s = session(&app, "wf-multipart", 0).await;
    let stored: Vec<Value> = (0..2).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    record(&app, s, stored.clone()).await;

    let mut parts = Parts::open(&app, json!({ "query": TRACES_SUB, "variables": { "s": s } })).await;
    for expected in &stored {
        assert_eq!(parts.payload().await["data"]["traces"]["node"]["id"], expected["id"]);
    }
    assert_eq!(parts.next().await, Some(json!({})), "a keep-alive while nothing happens");
    let live = vec![trace(5, "SUCCESS", "a", "b")];
    record(&app, s, live.clone()).await;
    assert_eq!(parts.payload().await["data"]["traces"]["node"]["id"], live[0]["id"]);

    let mut query = Parts::open(&app, json!({ "query": "{ __typename }" })).await;
    assert_eq!(query.payload().await, json!({ "data": { "__typename": "Query" } }));
    assert_eq!(query.next().await, None, "the closing delimiter ends a finished operation");
    assert_eq!(query.buffer, "\r\n--graphql--\r\n");
}
