//! The system under test: PostgreSQL (embedded or given) and the `flowtrace` server as a child process.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowtrace::embedded_pg::{EmbeddedOptions, EmbeddedPostgres};
use flowtrace::store::Store;
use serde_json::{Value, json};

use crate::Args;

pub struct Server {
    pub base: String,
    pub url: String,
    pub store: Store,
    pub http: reqwest::Client,
    pub timescaledb: bool,
    /// `pg_stat_statements` is loaded and created in the bench database.
    pub stat_statements: bool,
    child: tokio::process::Child,
    embedded: Option<EmbeddedPostgres>,
    /// The first process's: `stop` closes the pool the others share.
    owns_store: bool,
}

const DATABASE: &str = "flowtrace_bench";

impl Server {
    pub async fn start(args: &Args) -> anyhow::Result<Server> {
        let (url, embedded) = match &args.database_url {
            Some(url) => {
                let admin = Store::connect_lazy(url, 1)?;
                admin.wait_until_reachable(Duration::from_secs(30)).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")))
                    .execute(admin.pool())
                    .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}"))).execute(admin.pool()).await?;
                let (base, _) = url.rsplit_once('/').context("--database-url must end in /<database>")?;
                (format!("{base}/{DATABASE}"), None)
            }
            None => {
                let dir = std::env::temp_dir().join(format!("flowtrace-bench-{}", std::process::id()));
                // pg_stat_statements: the database's own time per request (the costs phase).
                let options = EmbeddedOptions {
                    preload: vec!["pg_stat_statements".into()],
                    settings: vec![("pg_stat_statements.track_planning".into(), "on".into())],
                    ..EmbeddedOptions::default()
                };
                let pg = EmbeddedPostgres::start(&dir, options).await?;
                pg.stop_when_process_exits(std::process::id(), true)?;
                flowtrace::app::create_database(&pg, DATABASE).await?;
                (pg.url(DATABASE), Some(pg))
            }
        };
        let store = Store::connect_lazy(&url, 8)?;
        store.wait_until_reachable(Duration::from_secs(30)).await?;
        store.migrate_up().await?;
        let timescaledb = store.mode().await?.is_timescaledb();
        let stat_statements =
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(store.pool()).await.is_ok();

        let child = spawn_process(&url, &[]).await?;
        let server = Server {
            base: child.0,
            url,
            store,
            http: reqwest::Client::builder().pool_max_idle_per_host(64).build()?,
            timescaledb,
            stat_statements,
            child: child.1,
            embedded,
            owns_store: true,
        };
        server.until_ready().await?;
        Ok(server)
    }

    /// Another `flowtrace` process on the same database, with extra environment variables.
    pub async fn another_process(&self, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let (base, child) = spawn_process(&self.url, env).await?;
        let server = Server {
            base,
            url: self.url.clone(),
            store: self.store.clone(),
            http: self.http.clone(),
            timescaledb: self.timescaledb,
            stat_statements: self.stat_statements,
            child,
            embedded: None,
            owns_store: false,
        };
        server.until_ready().await?;
        Ok(server)
    }

    /// A hot standby of the embedded cluster (none with --database-url): its URL of the bench database.
    pub async fn start_replica(&self) -> anyhow::Result<Option<String>> {
        let Some(pg) = &self.embedded else { return Ok(None) };
        let dir = std::env::temp_dir().join(format!("flowtrace-bench-{}-replica", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let replica = pg.start_replica(&dir).await?;
        replica.stop_when_process_exits(std::process::id(), true)?;
        Ok(Some(replica.url(DATABASE)))
    }

    async fn until_ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(res) = self.http.get(format!("{}/readyz", self.base)).send().await
                && res.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the flowtrace server did not become ready; see {}",
                    std::env::temp_dir().join("flowtrace-bench-server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let body: Value = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .json()
            .await?;
        if let Some(errors) = body.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        let mut body = body;
        Ok(body["data"].take())
    }

    /// A read whose latency is measured (see `Client::read`).
    pub async fn read(&self, query: &str, variables: Value) -> anyhow::Result<()> {
        self.client().read(query, variables).await
    }

    /// A handle on the server's HTTP endpoint that tasks can own.
    pub fn client(&self) -> Client {
        Client { base: self.base.clone(), http: self.http.clone() }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resets the server's peak RSS so the next reading covers one phase only (Linux `clear_refs` 5).
    pub fn reset_peak_rss(&self) {
        if let Some(pid) = self.pid() {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    /// CPU seconds (user + system) the server process has used so far.
    pub fn cpu_seconds(&self) -> Option<f64> {
        process_cpu_seconds(self.pid()?)
    }

    /// The server's peak RSS in MiB since the last reset.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.status_mib("VmHWM:")
    }

    /// The server's RSS in MiB now.
    pub fn rss_mib(&self) -> Option<f64> {
        self.status_mib("VmRSS:")
    }

    fn status_mib(&self, field: &str) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib: f64 = status.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        if self.owns_store {
            self.store.pool().close().await;
        }
        if let Some(pg) = self.embedded.take() {
            let _ = pg.stop().await;
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A read whose latency is measured: the whole body is received and checked to hold data and no errors, without
    /// building a JSON tree of it (the client's JSON work is not the server's).
    pub async fn read(&self, query: &str, variables: Value) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        struct Reply {
            data: Option<serde::de::IgnoredAny>,
            errors: Option<Value>,
        }
        let body = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .bytes()
            .await?;
        let reply: Reply = serde_json::from_slice(&body)?;
        if let Some(errors) = reply.errors {
            bail!("GraphQL errors: {errors}");
        }
        if reply.data.is_none() {
            bail!("a GraphQL response without data");
        }
        Ok(())
    }
}

/// Starts the release `flowtrace` on a free port; returns its base URL and the child.
async fn spawn_process(url: &str, env: &[(&str, String)]) -> anyhow::Result<(String, tokio::process::Child)> {
    let binary = flowtrace_binary()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::env::temp_dir().join("flowtrace-bench-server.log"))?;
    let mut command = tokio::process::Command::new(&binary);
    command
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--no-migrate"])
        .env("DATABASE_URL", url)
        .env("FLOWTRACE_DB_MAX_CONNECTIONS", "32")
        .env("FLOWTRACE_MAX_WS_CONNECTIONS", "100000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
    Ok((format!("http://127.0.0.1:{port}"), child))
}

pub fn flowtrace_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe.parent().context("bench binary has no folder")?.join("flowtrace");
    if !binary.exists() {
        bail!("{} is missing: build it first with `cargo build --release -p flowtrace -p bench`", binary.display());
    }
    Ok(binary)
}

/// CPU seconds (user + system) a process of this machine has used so far.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
