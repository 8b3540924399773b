//! Builds the server (router, schema, background tasks) and runs it until shutdown. Tests start the same app on a
//! random port with `spawn`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_graphql::Executor;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::sync::{Semaphore, watch};
use tower_http::cors::{Any, CorsLayer};

use crate::auth::{Auth, Caller};
use crate::config::{DatabaseArgs, ServeArgs};
use crate::embedded_pg::{EmbeddedOptions, EmbeddedPostgres, default_data_dir};
use crate::embedded_shared::{Closed, SharedCluster};
use crate::error::{BAD_USER_INPUT, LIMIT_EXCEEDED};
use crate::graphql::gate::Gate;
use crate::graphql::{self, SchemaOptions};
use crate::live::Live;
use crate::live::ws::{self, WsSettings};
use crate::store::Store;
use crate::store::health::Health;
use crate::store::retention::run_retention;
use crate::webhooks::Webhooks;

/// The database the process uses, and the embedded cluster behind it when there is one.
pub struct Database {
    pub store: Store,
    pub embedded: Option<SharedCluster>,
}

impl Database {
    /// `DATABASE_URL` when given, else the embedded cluster under the data folder (started, or shared with the other
    /// flowtrace processes using it).
    pub async fn open(args: &DatabaseArgs) -> anyhow::Result<Database> {
        if let Some(url) = &args.database_url {
            let store = Store::connect_lazy(url, args.db_max_connections)?;
            return Ok(Database { store, embedded: None });
        }
        let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let cluster = SharedCluster::open(&dir, EmbeddedOptions::default())
            .await
            .with_context(|| format!("starting the embedded PostgreSQL in {}", dir.display()))?;
        let pg = cluster.postgres();
        create_database(pg, "flowtrace").await?;
        tracing::info!(
            dir = %pg.dir().display(),
            port = pg.port(),
            timescaledb_preloaded = pg.timescaledb_preloaded(),
            "embedded PostgreSQL running in {} on 127.0.0.1:{}",
            pg.dir().display(),
            pg.port()
        );
        let store = Store::connect_lazy(&pg.url("flowtrace"), args.db_max_connections)?;
        Ok(Database { store, embedded: Some(cluster) })
    }

    /// Closes the pool and stops the embedded cluster cleanly, unless another flowtrace process still uses it.
    pub async fn close(self) {
        // Waits for connections in use to come back, but not forever.
        if tokio::time::timeout(Duration::from_secs(10), self.store.pool().close()).await.is_err() {
            tracing::warn!("database connections still in use after 10 s; closing anyway");
        }
        if let Some(cluster) = self.embedded {
            match cluster.close().await {
                Ok(Closed::Stopped) => tracing::info!("embedded PostgreSQL stopped"),
                Ok(Closed::LeftRunning) => {
                    tracing::info!("embedded PostgreSQL left running: another flowtrace process uses it")
                }
                Err(err) => tracing::error!(%err, "stopping the embedded PostgreSQL failed"),
            }
        }
    }
}

/// Creates `name` on the embedded cluster unless it exists.
pub async fn create_database(pg: &EmbeddedPostgres, name: &str) -> anyhow::Result<()> {
    let admin = Store::connect_lazy(&pg.url("postgres"), 1)?;
    admin.wait_until_reachable(Duration::from_secs(30)).await?;
    let exists: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1").bind(name).fetch_optional(admin.pool()).await?;
    if exists.is_none() {
        // Identifiers cannot be bound; `name` is ours, never a client's.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(admin.pool()).await?;
    }
    admin.pool().close().await;
    Ok(())
}

#[derive(Clone)]
struct AppState {
    gate: Gate,
    store: Store,
    auth: Arc<Auth>,
    ws: Arc<WsSettings>,
    ws_connections: Arc<Semaphore>,
    stopped: watch::Receiver<bool>,
}

fn cors(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let layer =
        CorsLayer::new().allow_methods([Method::GET, Method::POST]).allow_headers([CONTENT_TYPE, AUTHORIZATION]);
    if origins.iter().any(|o| o == "*") {
        return Ok(layer.allow_origin(Any));
    }
    let origins = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS origin '{o}'")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(layer.allow_origin(origins))
}

fn graphql_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, axum::Json(body)).into_response()
}

/// A server running in this process.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await??;
        Ok(())
    }

    /// Waits until the server ends by itself (it does not, unless told to).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }

    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Refuses a configuration that cannot serve: bad auth or webhook settings, an open non-loopback bind.
pub fn check_serve_args(args: &ServeArgs) -> anyhow::Result<()> {
    let auth = Auth::from_args(&args.auth)?;
    Webhooks::from_args(&args.webhooks)?;
    if !args.bind.ip().is_loopback() && !auth.configured() && !args.auth.insecure {
        anyhow::bail!(
            "refusing to serve on {} without authentication: set FLOWTRACE_JWT_SECRET or FLOWTRACE_API_KEYS, \
             or pass --insecure to serve it open",
            args.bind
        );
    }
    Ok(())
}

/// Listens on `addr`, naming the setting to change when the address is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|err| match err.kind() {
        std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "cannot listen on {addr}: the address is already in use (another flowtrace or other program); \
             choose another with --bind or FLOWTRACE_BIND"
        ),
        _ => anyhow::Error::new(err).context(format!("cannot listen on {addr}")),
    })
}

/// Prepares the database (migrations, policies), then serves on `args.bind`.
pub async fn spawn(store: Store, args: ServeArgs) -> anyhow::Result<RunningServer> {
    check_serve_args(&args)?;
    let listener = bind(args.bind).await?;
    spawn_on(listener, store, args).await
}

/// `spawn` on a listener already bound (and with `args` already checked).
pub async fn spawn_on(
    listener: tokio::net::TcpListener,
    store: Store,
    args: ServeArgs,
) -> anyhow::Result<RunningServer> {
    let auth = Auth::from_args(&args.auth)?;
    let webhooks = Webhooks::from_args(&args.webhooks)?;
    store.wait_until_reachable(Duration::from_secs(30)).await.context("connecting to the database")?;
    if !args.no_migrate {
        store.migrate_up().await.context("running migrations")?;
    }
    let mode = store.mode().await?;
    tracing::info!(mode = mode.name(), "storage: {}", mode.describe());
    let policies = args.policies.policies();
    let changed = policies.apply(store.orm()).await.context("applying storage policies")?;
    for change in changed {
        tracing::info!("policy: {change}");
    }
    let plain = !mode.is_timescaledb();
    tokio::spawn(run_retention(store.clone(), policies, plain, Duration::from_secs(3600)));

    crate::metrics::install();
    let (stop, stopped) = watch::channel(false);
    let live = Live::start(store.url().to_owned(), stopped.clone());
    if let Some(webhooks) = webhooks {
        webhooks.start(store.clone(), live.clone(), stopped.clone()).await.context("starting webhook delivery")?;
    }
    let options = SchemaOptions { introspection: !args.no_introspection };
    let gate = graphql::build(store.clone(), live, args.limits.clone(), options);
    let ws = WsSettings {
        init_timeout: Duration::from_secs(args.limits.ws_init_timeout_secs),
        keepalive: Duration::from_secs(args.limits.ws_keepalive_secs.max(1)),
        subscriptions_per_connection: args.limits.max_subscriptions_per_connection,
        send_timeout: Duration::from_secs(args.limits.ws_send_timeout_secs.max(1)),
    };
    let ws_connections = Arc::new(Semaphore::new(args.limits.max_ws_connections));
    let state = AppState {
        gate,
        store,
        auth: Arc::new(auth),
        ws: Arc::new(ws),
        ws_connections: ws_connections.clone(),
        stopped: stopped.clone(),
    };
    let mut router = Router::new().route("/graphql", post(graphql_http).get(graphql_ws));
    if !args.no_graphiql {
        router = router
            .route("/", get(|| async { axum::response::Redirect::temporary("/graphiql") }))
            .route("/graphiql", get(crate::graphiql::page))
            .route("/graphiql/assets/{file}", get(crate::graphiql::asset));
    }
    let router = router
        .route("/api/health/timescaledb", get(health))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(args.body_limit))
        .layer(cors(&args.cors_origins)?)
        .with_state(state);

    let addr = listener.local_addr()?;
    // Responses and subscription messages are written as soon as they are ready; Nagle's algorithm would hold a small
    // write back until the previous one is acknowledged.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set on an accepted connection");
        }
    });
    tracing::info!("flowtrace listening on http://{addr} (GraphQL at /graphql, GraphiQL at /graphiql)");
    let grace = Duration::from_secs(args.limits.shutdown_timeout_secs);
    let all_ws = u32::try_from(args.limits.max_ws_connections).unwrap_or(u32::MAX);
    let mut stopped = stopped;
    let task = tokio::spawn(async move {
        let mut signal = stopped.clone();
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|s| *s).await;
            })
            .into_future();
        tokio::pin!(serve);
        tokio::select! {
            served = &mut serve => return served,
            _ = stopped.wait_for(|s| *s) => {}
        }
        // Shutting down: in-flight requests and WebSocket closes (1001, sent by each connection) get `grace`
        // together, whatever clients do; what is still open then is dropped.
        let deadline = tokio::time::Instant::now() + grace;
        let served = match tokio::time::timeout_at(deadline, &mut serve).await {
            Ok(served) => served,
            Err(_) => {
                tracing::warn!(?grace, "shutdown: requests still in flight after the grace period; dropping them");
                Ok(())
            }
        };
        // Upgraded connections run outside axum's graceful shutdown: each holds a permit until it has closed.
        if tokio::time::timeout_at(deadline, ws_connections.acquire_many(all_ws)).await.is_err() {
            tracing::warn!(?grace, "shutdown: WebSockets still open after the grace period; dropping them");
        }
        served
    });
    Ok(RunningServer { addr, stop, task })
}

/// `POST /graphql`: a request or a batch. A body that is too large or not a GraphQL request gets a GraphQL-shaped
/// error too, so clients handle one error format.
async fn graphql_http(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_json(&headers) {
        // Browsers send text/plain, form and multipart bodies cross-origin without asking (no CORS preflight), so
        // running them would let any web page write into a server it can reach. A JSON body needs a preflight.
        let message = "POST /graphql takes Content-Type: application/json".into();
        return graphql_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, BAD_USER_INPUT, message);
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return graphql_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                LIMIT_EXCEEDED,
                "the request body is larger than the limit (body_limit): send smaller batches".into(),
            );
        }
        Err(rejection) => return graphql_error(rejection.status(), BAD_USER_INPUT, rejection.body_text()),
    };
    let request: async_graphql::BatchRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            let message = format!("the request body is not a GraphQL request in JSON: {err}");
            return graphql_error(StatusCode::BAD_REQUEST, BAD_USER_INPUT, message);
        }
    };
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = Caller(state.auth.principal(authorization));
    axum::Json(state.gate.execute_batch(request.data(caller)).await).into_response()
}

/// `application/json` or a `+json` type, with any parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

const WS_READ_BUFFER: usize = 4 * 1024;

/// `GET /graphql` with a WebSocket upgrade: subscriptions (and queries) over `graphql-transport-ws` or `graphql-ws`.
async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        let message = "GET /graphql opens a WebSocket for subscriptions (graphql-transport-ws); send queries and \
                       mutations as POST /graphql with a JSON body, or try them in /graphiql"
            .into();
        return graphql_error(StatusCode::BAD_REQUEST, BAD_USER_INPUT, message);
    };
    let requested = headers.get(SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(protocol) = requested.split(',').find_map(|p| WebSocketProtocols::from_str(p.trim()).ok()) else {
        let message = "the WebSocket must speak graphql-transport-ws or graphql-ws (Sec-WebSocket-Protocol)".into();
        return graphql_error(StatusCode::BAD_REQUEST, BAD_USER_INPUT, message);
    };
    let Ok(permit) = state.ws_connections.clone().try_acquire_owned() else {
        let message = "this server has reached its WebSocket connection limit (max_ws_connections)".into();
        return graphql_error(StatusCode::SERVICE_UNAVAILABLE, LIMIT_EXCEEDED, message);
    };
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Clients send small protocol messages; the 128 KiB default read buffer is zero-filled on every read, which
    // showed up as the top cost of busy subscription connections. Larger messages still arrive (the buffer grows).
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).read_buffer_size(WS_READ_BUFFER).on_upgrade(move |socket| {
        ws::serve(socket, state.gate, protocol, state.auth, authorization, state.ws, state.stopped, permit)
    })
}

/// The `GET /api/health/timescaledb` body. The first five fields keep the replaced service's contract, which
/// monitoring compares as numbers: counts of hypertables and continuous aggregates, and a version string (`""` when
/// there is no TimescaleDB). The names and the rest come beside them.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthBody {
    connected: bool,
    version: String,
    hypertables: usize,
    compression_enabled: bool,
    continuous_aggregates: usize,
    hypertable_names: Vec<String>,
    continuous_aggregate_names: Vec<String>,
    postgres_version: Option<String>,
    mode: String,
    jobs_failing: i64,
    /// Why the database cannot be reached; only when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<Health> for HealthBody {
    fn from(h: Health) -> Self {
        HealthBody {
            connected: h.connected,
            version: h.version.unwrap_or_default(),
            hypertables: h.hypertables.len(),
            compression_enabled: h.compression_enabled,
            continuous_aggregates: h.continuous_aggregates.len(),
            hypertable_names: h.hypertables,
            continuous_aggregate_names: h.continuous_aggregates,
            postgres_version: h.postgres_version,
            mode: h.mode,
            jobs_failing: h.jobs_failing,
            reason: h.reason,
        }
    }
}

/// `GET /api/health/timescaledb`: 503 with the reason when the database cannot be reached (at once, see `probe`).
async fn health(State(state): State<AppState>) -> Response {
    match state.store.probe(state.store.health()).await {
        Ok(health) => axum::Json(HealthBody::from(health)).into_response(),
        Err(err) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(HealthBody::from(Health::unreachable(err.to_string()))))
                .into_response()
        }
    }
}

/// `GET /readyz`: the database answers and is migrated.
async fn ready(State(state): State<AppState>) -> Response {
    match state.store.probe(state.store.ready()).await {
        Ok(true) => (StatusCode::OK, axum::Json(serde_json::json!({ "ready": true }))).into_response(),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false, "reason": "migrations pending" })),
        )
            .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false, "reason": err.to_string() })),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text, with the pool's state read at scrape time.
async fn metrics(State(state): State<AppState>) -> String {
    let pool = state.store.pool();
    metrics::gauge!("flowtrace_db_pool_connections").set(pool.size() as f64);
    metrics::gauge!("flowtrace_db_pool_idle_connections").set(pool.num_idle() as f64);
    crate::metrics::render()
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
