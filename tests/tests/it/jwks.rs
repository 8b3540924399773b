//! JWTs signed with the keys of a JWKS (RS256, ES256) served from a local HTTP server or a file: rotation without a
//! restart, withdrawn keys, an outage that keeps cached keys working, bounded refetches, and every bad token refused
//! with UNAUTHENTICATED.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use flowtrace::auth::AuthArgs;
use flowtrace::config::ServeArgs;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::{Kind, TestApp, test_db};

pub(crate) const ISSUER: &str = "https://project.test/auth/v1";
const LIST: &str = "{ sessions { totalCount } }";
const START: &str = "mutation { startSession(input: { workflowId: \"wf\", workflowName: \"Flow\" }) { id } }";

fn pem(kid: &str) -> Vec<u8> {
    std::fs::read(format!("{}/fixtures/jwks/{kid}.pem", env!("CARGO_MANIFEST_DIR"))).expect("test key")
}

/// A JWKS document with the public keys `kids`.
pub(crate) fn jwks(kids: &[&str]) -> String {
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/fixtures/jwks/public.json", env!("CARGO_MANIFEST_DIR"))).expect("keys"),
    )
    .expect("json");
    json!({ "keys": kids.iter().map(|k| all[*k].clone()).collect::<Vec<_>>() }).to_string()
}

/// Signed with the private key `key`, the header naming key id `kid`.
fn signed(key: &str, kid: &str, alg: Algorithm, claims: Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem(key)),
        _ => EncodingKey::from_rsa_pem(&pem(key)),
    }
    .expect("signing key");
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

fn token_with(kid: &str, alg: Algorithm, claims: Value) -> String {
    signed(kid, kid, alg, claims)
}

fn claims(role: &str) -> Value {
    json!({ "role": role, "sub": "user-1", "aud": "authenticated", "iss": ISSUER, "exp": Utc::now().timestamp() + 600 })
}

pub(crate) fn token(kid: &str, role: &str) -> String {
    let alg = if kid.starts_with("ec") { Algorithm::ES256 } else { Algorithm::RS256 };
    token_with(kid, alg, claims(role))
}

/// The JWKS server: serves `document`, or 503 while it is `None`; counts requests.
#[derive(Clone, Default)]
pub(crate) struct KeyServer {
    document: Arc<Mutex<Option<String>>>,
    requests: Arc<AtomicUsize>,
}

impl KeyServer {
    pub(crate) async fn start(document: Option<String>) -> (KeyServer, SocketAddr) {
        let server = KeyServer { document: Arc::new(Mutex::new(document)), requests: Arc::default() };
        let app = axum::Router::new()
            .route(
                "/jwks.json",
                axum::routing::get(|State(s): State<KeyServer>| async move {
                    s.requests.fetch_add(1, Ordering::SeqCst);
                    match s.document.lock().expect("lock").clone() {
                        Some(doc) => (StatusCode::OK, doc),
                        None => (StatusCode::SERVICE_UNAVAILABLE, "down".to_owned()),
                    }
                }),
            )
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (server, addr)
    }

    pub(crate) fn serve(&self, document: Option<String>) {
        *self.document.lock().expect("lock") = document;
    }
}

async fn call(app: &TestApp, token: &str, query: &str) -> Value {
    let req = app.http.post(format!("{}/graphql", app.base)).json(&json!({ "query": query }));
    let res = req.header("Authorization", format!("Bearer {token}")).send().await.expect("sent");
    assert_ne!(res.status().as_u16(), 500, "never a 500");
    res.json().await.expect("json")
}

fn code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("none").to_owned()
}

async fn app_with(auth: AuthArgs) -> TestApp {
    TestApp::with_db(test_db(Kind::Default).await, ServeArgs { auth, ..Default::default() }).await
}

#[tokio::test]
async fn jwks_keys_sign_tokens_rotate_without_a_restart_and_survive_an_outage() {
    let (keys, addr) = KeyServer::start(Some(jwks(&["rsa-1", "ec-1"]))).await;
    let app = app_with(AuthArgs {
        jwks_url: Some(format!("http://{addr}/jwks.json")),
        jwt_issuer: Some(ISSUER.into()),
        jwt_audience: Some("authenticated".into()),
        ..Default::default()
    })
    .await;
    let ok = |body: &Value| body.get("errors").is_none();
    assert!(ok(&call(&app, &token("rsa-1", "service_role"), START).await), "RS256 service_role writes");
    assert!(ok(&call(&app, &token("ec-1", "authenticated"), LIST).await), "ES256 authenticated reads");
    assert_eq!(code(&call(&app, &token("ec-1", "authenticated"), START).await), "FORBIDDEN");

    // Rotation: rsa-2 replaces rsa-1. The first token naming rsa-2 makes the server read the set again.
    keys.serve(Some(jwks(&["rsa-2", "ec-1"])));
    assert!(ok(&call(&app, &token("rsa-2", "service_role"), LIST).await), "the new key works at once");
    assert_eq!(code(&call(&app, &token("rsa-1", "service_role"), LIST).await), "UNAUTHENTICATED", "withdrawn");

    // Unknown key ids are refused, and a flood of them reads the set at most once per MIN_REFETCH.
    let before = keys.requests.load(Ordering::SeqCst);
    for i in 0..40 {
        let unknown = signed("rsa-1", &format!("unknown-{i}"), Algorithm::RS256, claims("service_role"));
        assert_eq!(code(&call(&app, &unknown, LIST).await), "UNAUTHENTICATED");
    }
    let reads = keys.requests.load(Ordering::SeqCst) - before;
    assert!(reads <= 1, "{reads} reads of the JWKS for 40 tokens with unknown key ids");

    // An outage: keys already held keep working, others are refused, never with a 500.
    keys.serve(None);
    assert!(ok(&call(&app, &token("rsa-2", "service_role"), LIST).await), "a cached key survives the outage");
    assert_eq!(code(&call(&app, &token("rsa-1", "service_role"), LIST).await), "UNAUTHENTICATED");

    // Bad tokens of every kind.
    let mut expired = claims("service_role");
    expired["exp"] = json!(Utc::now().timestamp() - 600);
    let mut audience = claims("service_role");
    audience["aud"] = json!("someone-else");
    let mut issuer = claims("service_role");
    issuer["iss"] = json!("https://evil.test");
    let public_as_secret = {
        // Algorithm confusion: HS256 with the RSA public key as the HMAC secret.
        let all: Value = serde_json::from_str(&jwks(&["rsa-2"])).expect("json");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-2".into());
        jsonwebtoken::encode(&header, &claims("service_role"), &EncodingKey::from_secret(all.to_string().as_bytes()))
            .expect("sign")
    };
    let none = {
        use base64::Engine;
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(json!({ "alg": "none", "kid": "rsa-2" })), b64(claims("service_role")))
    };
    for (what, bad) in [
        ("expired", token_with("rsa-2", Algorithm::RS256, expired)),
        ("wrong audience", token_with("rsa-2", Algorithm::RS256, audience)),
        ("wrong issuer", token_with("rsa-2", Algorithm::RS256, issuer)),
        ("HS256 with the public key", public_as_secret),
        ("alg none", none),
        ("RS256 naming the EC key", signed("rsa-2", "ec-1", Algorithm::RS256, claims("service_role"))),
        ("garbage", "a.b.c".into()),
    ] {
        assert_eq!(code(&call(&app, &bad, LIST).await), "UNAUTHENTICATED", "{what}");
    }
}

#[tokio::test]
async fn a_jwks_file_is_read_again_for_a_new_key_and_a_server_down_at_start_recovers() {
    let file =
        std::env::temp_dir().join(format!("flowtrace-jwks-{}-{}.json", std::process::id(), uuid::Uuid::new_v4()));
    std::fs::write(&file, jwks(&["ec-1"])).expect("write");
    let app = app_with(AuthArgs { jwks_file: Some(file.clone()), ..Default::default() }).await;
    assert!(call(&app, &token("ec-1", "service_role"), LIST).await.get("errors").is_none());
    // A key added to the file works without a restart: the unknown key id makes the server read the file again.
    std::fs::write(&file, jwks(&["ec-1", "rsa-1"])).expect("rewrite");
    assert!(call(&app, &token("rsa-1", "service_role"), LIST).await.get("errors").is_none());
    assert_eq!(code(&call(&app, &token("rsa-2", "service_role"), LIST).await), "UNAUTHENTICATED");
    let _ = std::fs::remove_file(&file);

    // A JWKS server that is down when flowtrace starts: it starts anyway and accepts tokens once the server is up.
    let (keys, addr) = KeyServer::start(None).await;
    let app = app_with(AuthArgs { jwks_url: Some(format!("http://{addr}/jwks.json")), ..Default::default() }).await;
    keys.serve(Some(jwks(&["rsa-1"])));
    assert!(call(&app, &token("rsa-1", "service_role"), LIST).await.get("errors").is_none(), "read once it is up");
}
