//! Responses above the size threshold come compressed in the encoding the client accepts; small ones do not.

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::harness::{Kind, TestApp, test_db};
use flowtrace::config::ServeArgs;

const LARGE: &str = "{ __schema { types { name description fields { name description } } } }";

async fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let read = match encoding {
        "gzip" => GzipDecoder::new(bytes).read_to_end(&mut out).await,
        "br" => BrotliDecoder::new(bytes).read_to_end(&mut out).await,
        "zstd" => ZstdDecoder::new(bytes).read_to_end(&mut out).await,
        other => panic!("unexpected encoding {other}"),
    };
    read.unwrap_or_else(|err| panic!("{encoding}: {err}"));
    out
}

/// The `Content-Encoding` and the raw body of a POST sent with `Accept-Encoding: encoding`.
async fn post(app: &TestApp, encoding: &str, query: &str) -> (Option<String>, Vec<u8>) {
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .header("accept-encoding", encoding)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 200);
    let used = response.headers().get("content-encoding").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (used, response.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn large_responses_come_compressed_as_accepted_and_small_ones_plain() {
    let app = TestApp::start(Kind::Default).await;
    let (plain_encoding, plain) = post(&app, "identity", LARGE).await;
    assert_eq!(plain_encoding, None);
    let expected: Value = serde_json::from_slice(&plain).expect("JSON");
    assert!(expected["data"]["__schema"]["types"].is_array(), "{expected}");
    assert!(plain.len() > 10_000, "a large response: {} bytes", plain.len());

    for encoding in ["zstd", "br", "gzip"] {
        let (used, body) = post(&app, encoding, LARGE).await;
        assert_eq!(used.as_deref(), Some(encoding));
        assert!(body.len() < plain.len() / 2, "{encoding}: {} of {} bytes", body.len(), plain.len());
        let decoded: Value = serde_json::from_slice(&decode(encoding, &body).await).expect("decoded JSON");
        assert_eq!(decoded, expected, "{encoding}");
    }
    // The client's preference among several.
    assert_eq!(post(&app, "gzip;q=0.5, zstd", LARGE).await.0.as_deref(), Some("zstd"));

    let (used, body) = post(&app, "gzip, br, zstd", "{ __typename }").await;
    assert_eq!(used, None, "a small response is sent as it is");
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("JSON"), json!({ "data": { "__typename": "Query" } }));

    let off =
        TestApp::with_db(test_db(Kind::Default).await, ServeArgs { no_compression: true, ..Default::default() }).await;
    assert_eq!(post(&off, "gzip, br, zstd", LARGE).await.0, None, "switched off");
}

#[tokio::test]
async fn websocket_upgrades_are_not_compressed() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let app = TestApp::start(Kind::Default).await;
    let mut request = format!("{}/graphql", app.base.replacen("http", "ws", 1)).into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().expect("header"));
    request.headers_mut().insert("Accept-Encoding", "gzip, br, zstd".parse().expect("header"));
    let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("WebSocket connects");
    assert_eq!(response.status().as_u16(), 101);
    assert!(response.headers().get("content-encoding").is_none());
    ws.send(Message::Text(json!({ "type": "connection_init" }).to_string().into())).await.expect("sent");
    let ack = ws.next().await.expect("a message").expect("readable");
    assert_eq!(serde_json::from_str::<Value>(ack.to_text().expect("text")).expect("JSON")["type"], "connection_ack");
}
