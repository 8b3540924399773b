//! The one test harness: throwaway PostgreSQL clusters started from the local binaries (or `TEST_DATABASE_URL`), a
//! migrated template database per cluster, a fresh database per test, and the real server on a random port.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flowtrace::app::{RunningServer, spawn};
use flowtrace::config::ServeArgs;
use flowtrace::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use flowtrace::store::Store;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Which cluster a test needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TimescaleDB when it is installed here, else plain PostgreSQL: what most tests run on.
    Default,
    /// A cluster that never preloads TimescaleDB: plain mode even where the extension is installed.
    Plain,
}

struct Cluster {
    /// URL of a maintenance database, with `{db}` where the database name goes.
    url_pattern: String,
    template: &'static str,
    timescaledb: bool,
}

static DEFAULT: OnceCell<Option<Cluster>> = OnceCell::const_new();
static PLAIN: OnceCell<Option<Cluster>> = OnceCell::const_new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn db_url(pattern: &str, db: &str) -> String {
    pattern.replace("{db}", db)
}

/// Starts a throwaway cluster that stops (and is deleted) when this test process exits.
pub async fn throwaway_cluster(name: &str, timescaledb: bool) -> EmbeddedPostgres {
    let dir = std::env::temp_dir().join(format!("flowtrace-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = EmbeddedOptions {
        timescaledb,
        settings: [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "300"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        preload: Vec::new(),
    };
    let pg = match EmbeddedPostgres::start(&dir, options).await {
        Ok(pg) => pg,
        Err(err) => panic!("cannot start a test PostgreSQL in {}: {err}", dir.display()),
    };
    if let Err(err) = pg.stop_when_process_exits(std::process::id(), true) {
        panic!("cannot arrange cleanup of the test cluster: {err}");
    }
    pg
}

async fn cluster(kind: Kind) -> Option<&'static Cluster> {
    let cell = match kind {
        Kind::Default => &DEFAULT,
        Kind::Plain => &PLAIN,
    };
    cell.get_or_init(|| async move {
        let (url_pattern, template) = match (std::env::var("TEST_DATABASE_URL").ok(), kind) {
            (Some(url), Kind::Default) => (with_db_placeholder(&url), "flowtrace_test_template"),
            // A given server's preload setting is not ours to change: plain-only tests skip there.
            (Some(_), Kind::Plain) => return None,
            (None, kind) => {
                let pg =
                    throwaway_cluster(if kind == Kind::Plain { "plain" } else { "default" }, kind == Kind::Default)
                        .await;
                (pg.url("{db}"), "flowtrace_template")
            }
        };
        let timescaledb = make_template(&url_pattern, template).await;
        Some(Cluster { url_pattern, template, timescaledb })
    })
    .await
    .as_ref()
}

fn with_db_placeholder(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _db)) => format!("{base}/{{db}}"),
        None => panic!("TEST_DATABASE_URL must end in /<database>"),
    }
}

async fn admin(pattern: &str) -> Store {
    let store = Store::connect_lazy(&db_url(pattern, "postgres"), 2).expect("admin pool");
    store.wait_until_reachable(Duration::from_secs(30)).await.expect("test PostgreSQL reachable");
    store
}

async fn exec(store: &Store, sql: String) {
    if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(store.pool()).await {
        panic!("{sql}: {err}");
    }
}

/// Creates and migrates the template; returns whether it runs TimescaleDB.
async fn make_template(pattern: &str, template: &str) -> bool {
    let admin = admin(pattern).await;
    exec(&admin, format!("DROP DATABASE IF EXISTS {template} WITH (FORCE)")).await;
    exec(&admin, format!("CREATE DATABASE {template}")).await;
    let store = Store::connect_lazy(&db_url(pattern, template), 2).expect("template pool");
    store.migrate_up().await.expect("migrating the template");
    let timescaledb = store.mode().await.expect("mode").is_timescaledb();
    store.pool().close().await;
    // TimescaleDB's scheduler keeps a connection to every database with the extension; a template must have none.
    exec(&admin, format!("ALTER DATABASE {template} WITH ALLOW_CONNECTIONS false")).await;
    exec(&admin, format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}'")).await;
    admin.pool().close().await;
    timescaledb
}

/// A fresh database for one test.
pub struct TestDb {
    pub store: Store,
    pub timescaledb: bool,
}

/// A fresh migrated database on the given cluster, or `None` (with a printed reason) when that cluster cannot exist.
pub async fn try_test_db(kind: Kind) -> Option<TestDb> {
    let Some(cluster) = cluster(kind).await else {
        skipped("plain-mode part: no plain-mode cluster when TEST_DATABASE_URL is given");
        return None;
    };
    let name = format!("t{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let admin = admin(&cluster.url_pattern).await;
    for attempt in 0.. {
        let created = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name} TEMPLATE {}", cluster.template)))
            .execute(admin.pool())
            .await;
        match created {
            Ok(_) => break,
            Err(err) if attempt < 20 && err.to_string().contains("being accessed") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(err) => panic!("creating test database {name}: {err}"),
        }
    }
    admin.pool().close().await;
    let store = Store::connect_lazy(&db_url(&cluster.url_pattern, &name), 16).expect("test pool");
    Some(TestDb { store, timescaledb: cluster.timescaledb })
}

pub async fn test_db(kind: Kind) -> TestDb {
    match try_test_db(kind).await {
        Some(db) => db,
        None => panic!("this test needs its own cluster"),
    }
}

/// An empty (unmigrated) database on the default cluster.
pub async fn empty_db() -> TestDb {
    match empty_db_on(Kind::Default).await {
        Some(db) => db,
        None => panic!("the default cluster always exists"),
    }
}

/// An empty (unmigrated) database on the given cluster, or `None` (with a printed reason) when it cannot exist.
pub async fn empty_db_on(kind: Kind) -> Option<TestDb> {
    let Some(cluster) = cluster(kind).await else {
        skipped("plain-mode part: no plain-mode cluster when TEST_DATABASE_URL is given");
        return None;
    };
    let name = format!("e{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let admin = admin(&cluster.url_pattern).await;
    exec(&admin, format!("CREATE DATABASE {name}")).await;
    admin.pool().close().await;
    let store = Store::connect_lazy(&db_url(&cluster.url_pattern, &name), 4).expect("pool");
    Some(TestDb { store, timescaledb: cluster.timescaledb })
}

/// Says a test (or part of one) was skipped, on the real stderr: the test harness does not capture it, so the line
/// shows in every run, passing or not.
pub fn skipped(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {what}");
}

/// Whether the default cluster runs TimescaleDB; prints the skip line when it does not.
pub fn require_timescaledb(db: &TestDb, test: &str) -> bool {
    if !db.timescaledb {
        skipped(&format!("{test}: TimescaleDB is not installed on this machine (plain mode only)"));
    }
    db.timescaledb
}

/// The real server on a random loopback port, with a GraphQL client.
pub struct TestApp {
    pub db: TestDb,
    pub server: Option<RunningServer>,
    pub base: String,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn start(kind: Kind) -> TestApp {
        Self::with_db(test_db(kind).await, ServeArgs::default()).await
    }

    pub async fn with_db(db: TestDb, args: ServeArgs) -> TestApp {
        let mut app = TestApp { db, server: None, base: String::new(), http: reqwest::Client::new() };
        app.restart(args).await;
        app
    }

    /// Starts the server on this database (again, after `shutdown`), on a new random port.
    pub async fn restart(&mut self, mut args: ServeArgs) {
        args.bind = "127.0.0.1:0".parse().expect("addr");
        let server = spawn(self.db.store.clone(), args).await.expect("server starts");
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// Graceful shutdown of the server.
    pub async fn shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }

    /// A second client of a running server (for concurrent tasks): it holds no database and no server.
    pub fn client_for(base: String) -> TestClient {
        TestClient { base, http: reqwest::Client::new() }
    }

    /// POSTs a GraphQL request; returns the whole response body.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        TestClient { base: self.base.clone(), http: self.http.clone() }.gql(query, variables).await
    }

    /// POSTs a whole GraphQL request body (with `extensions`, say), as `authorization` when given; returns the
    /// response body.
    pub async fn post(&self, body: Value, authorization: Option<&str>) -> Value {
        let mut req = self.http.post(format!("{}/graphql", self.base)).json(&body);
        if let Some(authorization) = authorization {
            req = req.header("Authorization", authorization);
        }
        req.send().await.expect("sent").json().await.expect("a JSON response")
    }

    /// `data` of a request that must succeed.
    pub async fn ok(&self, query: &str, variables: Value) -> Value {
        let body = self.gql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// The first error's `extensions.code` and message of a request that must fail.
    pub async fn err(&self, query: &str, variables: Value) -> (String, String) {
        let body = self.gql(query, variables).await;
        let error = &body["errors"][0];
        assert!(!error.is_null(), "expected an error, got {body:#}");
        (
            error["extensions"]["code"].as_str().unwrap_or("").to_owned(),
            error["message"].as_str().unwrap_or("").to_owned(),
        )
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self.http.get(format!("{}{path}", self.base)).send().await.expect("GET");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(self.db.store.pool())
            .await
            .expect("scalar query")
    }
}

/// An HTTP GraphQL client of a running server.
#[derive(Clone)]
pub struct TestClient {
    pub base: String,
    pub http: reqwest::Client,
}

impl TestClient {
    pub async fn try_gql(&self, query: &str, variables: Value) -> Result<Value, reqwest::Error> {
        let res = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?;
        res.json().await
    }

    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.try_gql(query, variables).await.expect("GraphQL response")
    }
}
