//! What graphql-transport-ws requires of a client, enforced with its close codes, over real sockets.

use std::time::Duration;

use serde_json::json;

use crate::fixtures::{record, session, trace};
use crate::harness::{Kind, TestApp};
use crate::live::TRACES_SUB;
use crate::ws_client::{Event, LEGACY_WS, TRANSPORT_WS, WsClient};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_subscribe_before_connection_init_closes_4401_and_a_reused_id_closes_4409() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf-protocol", 0).await;

    let mut early = WsClient::open(&app.base, TRANSPORT_WS).await;
    early.subscribe_as("1", TRACES_SUB, json!({ "s": s })).await;
    assert_eq!(early.closed_within(WAIT).await, Some(4401), "subscribe before connection_init");

    let mut client = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    client.subscribe_as("a", TRACES_SUB, json!({ "s": s })).await;
    client.assert_quiet(Duration::from_millis(300)).await;
    client.subscribe_as("a", TRACES_SUB, json!({ "s": s })).await;
    assert_eq!(client.closed_within(WAIT).await, Some(4409), "an id that is still subscribed");

    // An id is free again once its operation completed, or once the client completed it.
    let mut reuse = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    for _ in 0..2 {
        reuse.subscribe_as("q", "{ __typename }", json!({})).await;
        assert_eq!(reuse.next_data().await["__typename"], "Query");
        assert!(matches!(reuse.next_event(WAIT).await, Some(Event::Complete)));
    }
    reuse.subscribe_as("b", TRACES_SUB, json!({ "s": s })).await;
    reuse.stop("b").await;
    reuse.subscribe_as("b", TRACES_SUB, json!({ "s": s })).await;
    let live = trace(1, "SUCCESS", "a", "b");
    record(&app, s, vec![live.clone()]).await;
    loop {
        match reuse.next_event(WAIT).await {
            Some(Event::Complete) => continue,
            Some(Event::Data(data)) => {
                assert_eq!(data["traces"]["node"]["id"], live["id"], "the new subscription under the freed id");
                break;
            }
            other => panic!("expected the live trace, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_legacy_protocol_refuses_a_start_before_connection_init_and_replaces_a_reused_id() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf-legacy", 0).await;
    let mut early = WsClient::open(&app.base, LEGACY_WS).await;
    early.subscribe_as("1", TRACES_SUB, json!({ "s": s })).await;
    assert!(early.closed_within(WAIT).await.is_some(), "closed with a code");

    // subscriptions-transport-ws defines no code for a reused id: the new subscription replaces the old one, and
    // each trace arrives once.
    let mut client = WsClient::connect(&app.base, LEGACY_WS, json!({})).await;
    client.subscribe_as("a", TRACES_SUB, json!({ "s": s })).await;
    client.subscribe_as("a", TRACES_SUB, json!({ "s": s })).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let live = trace(1, "SUCCESS", "a", "b");
    record(&app, s, vec![live.clone()]).await;
    assert_eq!(client.next_data().await["traces"]["node"]["id"], live["id"]);
    client.assert_quiet(Duration::from_millis(500)).await;
}
