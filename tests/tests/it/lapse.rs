//! A subscription whose credentials stop being valid ends with UNAUTHENTICATED, on every transport (WebSocket in
//! both protocols, SSE, multipart HTTP): when its token expires, and when the JWKS key that signed its token is
//! withdrawn. A JWKS outage ends nothing.

use std::time::Duration;

use chrono::Utc;
use flowtrace::auth::AuthArgs;
use flowtrace::config::ServeArgs;
use serde_json::json;

use crate::harness::{Kind, TestApp, test_db};
use crate::jwks::{ISSUER, KeyServer, jwks, token};
use crate::live::TRACES_SUB;
use crate::multipart::Parts;
use crate::sse::EventStream;
use crate::ws_client::{Event, LEGACY_WS, TRANSPORT_WS, WsClient};

const SECRET: &str = "lapse-secret-0123456789-0123456789";

#[derive(Clone, Copy, Debug)]
enum Transport {
    Ws,
    LegacyWs,
    Sse,
    Multipart,
}

const TRANSPORTS: [Transport; 4] = [Transport::Ws, Transport::LegacyWs, Transport::Sse, Transport::Multipart];

/// A subscription to a workflow nobody writes to: it delivers nothing until it ends.
enum Open {
    Ws(WsClient),
    Sse(EventStream),
    Multipart(Parts),
}

impl Open {
    async fn start(app: &TestApp, transport: Transport, token: &str) -> Open {
        let auth = format!("Bearer {token}");
        let body = json!({ "query": TRACES_SUB, "variables": { "w": "quiet" } });
        match transport {
            Transport::Ws | Transport::LegacyWs => {
                let protocol = if matches!(transport, Transport::Ws) { TRANSPORT_WS } else { LEGACY_WS };
                let mut ws = WsClient::connect(&app.base, protocol, json!({ "Authorization": auth })).await;
                ws.subscribe(TRACES_SUB, json!({ "w": "quiet" })).await;
                Open::Ws(ws)
            }
            Transport::Sse => Open::Sse(EventStream::open(app, Some(&auth), body).await),
            Transport::Multipart => Open::Multipart(Parts::open_as(app, Some(&auth), body).await),
        }
    }

    /// The first error the subscription ends with (its `code` and `message`).
    async fn closing_error(&mut self) -> (String, String) {
        let errors = match self {
            Open::Ws(ws) => match ws.next_event(Duration::from_secs(20)).await {
                Some(Event::Error(errors)) => errors,
                other => panic!("expected an error, got {other:?}"),
            },
            Open::Sse(stream) => stream.next_result().await["errors"].clone(),
            Open::Multipart(parts) => parts.payload().await["errors"].clone(),
        };
        let error = &errors[0];
        (
            error["extensions"]["code"].as_str().unwrap_or_default().into(),
            error["message"].as_str().unwrap_or_default().into(),
        )
    }
}

#[tokio::test]
async fn a_subscription_ends_with_unauthenticated_when_its_token_expires_on_every_transport() {
    let auth = AuthArgs { jwt_secret: Some(SECRET.into()), ..Default::default() };
    let app = TestApp::with_db(test_db(Kind::Default).await, ServeArgs { auth, ..Default::default() }).await;
    let claims = json!({ "role": "service_role", "sub": "u", "exp": Utc::now().timestamp() + 3 });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign");
    let mut open = Vec::new();
    for transport in TRANSPORTS {
        open.push((transport, Open::start(&app, transport, &token).await));
    }
    for (transport, subscription) in &mut open {
        let (code, message) = subscription.closing_error().await;
        assert_eq!(code, "UNAUTHENTICATED", "{transport:?}: {message}");
        assert!(message.contains("expired"), "{transport:?}: {message}");
    }
}

#[tokio::test]
async fn a_subscription_ends_when_the_jwks_withdraws_the_key_that_signed_its_token() {
    let (keys, addr) = KeyServer::start(Some(jwks(&["rsa-1", "ec-1"]))).await;
    let auth = AuthArgs {
        jwks_url: Some(format!("http://{addr}/jwks.json")),
        jwt_issuer: Some(ISSUER.into()),
        jwks_refresh_secs: 1,
        ..Default::default()
    };
    let app = TestApp::with_db(test_db(Kind::Default).await, ServeArgs { auth, ..Default::default() }).await;
    let (withdrawn, kept) = (token("rsa-1", "service_role"), token("ec-1", "service_role"));
    let mut open = Vec::new();
    for transport in TRANSPORTS {
        open.push((transport, Open::start(&app, transport, &withdrawn).await));
    }
    let mut survivor =
        WsClient::connect(&app.base, TRANSPORT_WS, json!({ "Authorization": format!("Bearer {kept}") })).await;
    survivor.subscribe(TRACES_SUB, json!({ "w": "quiet" })).await;

    // An outage of the JWKS server withdraws nothing: the keys held stay.
    keys.serve(None);
    survivor.assert_quiet(Duration::from_millis(2500)).await;
    if let Some((_, Open::Ws(ws))) = open.first_mut() {
        ws.assert_quiet(Duration::from_millis(100)).await;
    }

    keys.serve(Some(jwks(&["ec-1"])));
    for (transport, subscription) in &mut open {
        let (code, message) = subscription.closing_error().await;
        assert_eq!(code, "UNAUTHENTICATED", "{transport:?}: {message}");
        assert!(message.contains("withdrawn"), "{transport:?}: {message}");
    }
    // The token of a key still in the set keeps its subscription, and a new request with the withdrawn key's
    // token is refused.
    survivor.assert_quiet(Duration::from_millis(1500)).await;
    let body = app.post(json!({ "query": "{ sessions { totalCount } }" }), Some(&format!("Bearer {withdrawn}"))).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{body}");
}
