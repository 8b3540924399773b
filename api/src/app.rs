//! Assembles the server (store, live notifications, webhooks, schema, retention) and runs it until shutdown; the
//! routes and handlers are in `http`. Tests start the same app on a random port with `spawn`.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt;
use tokio::sync::{Semaphore, watch};

use crate::auth::Auth;
use crate::config::{DatabaseArgs, ServeArgs};
use crate::embedded_pg::{EmbeddedOptions, EmbeddedPostgres, default_data_dir};
use crate::embedded_shared::{Closed, SharedCluster};
use crate::graphql::persisted::Documents;
use crate::graphql::{self, SchemaOptions};
use crate::http::ws::WsSettings;
use crate::http::{self, HttpState};
use crate::live::Live;
use crate::store::Store;
use crate::store::aggregate_refresh::run_refresh;
use crate::store::replicas::Replicas;
use crate::store::retention::{retention_round, run_retention};
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
        if tokio::time::timeout(Duration::from_secs(10), self.store.close()).await.is_err() {
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
    Auth::check_args(&args.auth)?;
    Webhooks::from_args(&args.webhooks)?;
    if !args.bind.ip().is_loopback() && !args.auth.configured() && !args.auth.insecure {
        anyhow::bail!(
            "refusing to serve on {} without authentication: set FLOWTRACE_JWT_SECRET, FLOWTRACE_JWKS_URL, \
             FLOWTRACE_JWKS_FILE or FLOWTRACE_API_KEYS, or pass --insecure to serve it open",
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

/// The store reading from the configured replicas, each watched for lag until `stop`.
fn with_replicas(store: Store, args: &ServeArgs, stop: watch::Receiver<bool>) -> anyhow::Result<Store> {
    let r = &args.replicas;
    let urls: Vec<String> =
        r.read_database_urls.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
    if urls.is_empty() {
        return Ok(store);
    }
    let (max_lag, wait) = (Duration::from_millis(r.replica_max_lag_ms), Duration::from_millis(r.replica_wait_ms));
    let replicas = Arc::new(Replicas::connect(&urls, store.pool().options().get_max_connections(), max_lag, wait)?);
    tokio::spawn(replicas.clone().monitor(store.pool().clone(), stop));
    tracing::info!(replicas = urls.len(), "reads go to the replicas that keep up");
    Ok(store.with_replicas(replicas))
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
    let auth = Auth::from_args(&args.auth).await?;
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
    retention_round(&store, &policies, plain).await;
    tokio::spawn(run_retention(store.clone(), policies.clone(), plain, Duration::from_secs(3600)));
    if !plain && args.late_data_refresh_ms > 0 {
        let every = Duration::from_millis(args.late_data_refresh_ms);
        tokio::spawn(run_refresh(store.clone(), policies.clone(), every));
    }

    crate::metrics::install();
    let (stop, stopped) = watch::channel(false);
    let store = with_replicas(store, &args, stopped.clone())?;
    let live = Live::start(store.url().to_owned(), store.replicas().is_some(), stopped.clone());
    if let Some(webhooks) = webhooks {
        let primary = store.primary_only();
        webhooks.start(primary, live.clone(), stopped.clone()).await.context("starting webhook delivery")?;
    }
    let persisted = match &args.trusted_documents {
        Some(path) => {
            let documents = Documents::trusted_from(path)?;
            tracing::info!("only the trusted documents of {} run", path.display());
            documents
        }
        None => Documents::automatic(args.persisted_queries),
    };
    let options = SchemaOptions { introspection: !args.no_introspection, policies, persisted: Arc::new(persisted) };
    let gate = graphql::build(store.clone(), live, args.limits.clone(), options);
    let ws = WsSettings {
        init_timeout: Duration::from_secs(args.limits.ws_init_timeout_secs),
        keepalive: Duration::from_secs(args.limits.ws_keepalive_secs.max(1)),
        subscriptions_per_connection: args.limits.max_subscriptions_per_connection,
        send_timeout: Duration::from_secs(args.limits.ws_send_timeout_secs.max(1)),
    };
    let ws_connections = Arc::new(Semaphore::new(args.limits.max_ws_connections));
    let state = HttpState {
        gate,
        store,
        auth: Arc::new(auth),
        ws: Arc::new(ws),
        ws_connections: ws_connections.clone(),
        sse: Arc::default(),
        stopped: stopped.clone(),
    };
    let router = http::router(state, &args)?;

    let addr = listener.local_addr()?;
    // Responses and subscription messages are written as soon as they are ready; Nagle's algorithm would hold a small
    // write back until the previous one is acknowledged. A client that stops reading holds at most its send buffer
    // of the machine's TCP memory (see `Limits::socket_send_buffer_bytes`).
    let send_buffer = args.limits.socket_send_buffer_bytes;
    let listener = listener.tap_io(move |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set on an accepted connection");
        }
        if send_buffer > 0
            && let Err(err) = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer as usize)
        {
            tracing::debug!(%err, "SO_SNDBUF not set on an accepted connection");
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
