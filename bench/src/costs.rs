//! What a read costs, per request: the database's time (from `pg_stat_statements`: planning and execution of every
//! statement the request ran), the PostgreSQL backends' CPU (all the rest a request costs the database too), the
//! server's CPU and the wall time, beside the cheapest single statement that returns the same rows. Then throughput
//! with 8 concurrent clients, API against that statement from a pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use flowtrace::store::sessions::SESSION_COLUMNS;
use flowtrace::store::traces::TRACE_COLUMNS;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::Sizes;
use crate::reads::{Dataset, generate};
use crate::report::{Report, percentiles};
use crate::server::{Client, Server, process_cpu_seconds};

/// One read: the GraphQL request and the statement it is measured against.
struct Read {
    name: &'static str,
    query: &'static str,
    variables: fn(&Dataset, usize) -> Value,
    sql: String,
    /// The statement's one parameter for run `i`.
    param: fn(&Dataset, usize) -> String,
}

impl Read {
    /// Run `i` through the API.
    async fn api(&self, client: &Client, data: &Dataset, i: usize) -> anyhow::Result<()> {
        client.read(self.query, (self.variables)(data, i)).await
    }

    /// Run `i` as the one statement.
    async fn direct(&self, pool: &PgPool, data: &Dataset, i: usize) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(self.sql.clone())).bind((self.param)(data, i)).fetch_all(pool).await?;
        Ok(())
    }
}

fn session(data: &Dataset, i: usize) -> String {
    data.sessions[(i * 7919) % data.sessions.len()].0.clone()
}

fn workflow(data: &Dataset, i: usize) -> String {
    data.sessions[(i * 7919) % data.sessions.len()].1.clone()
}

fn reads() -> Vec<Read> {
    vec![
        Read {
            name: "sessions(filter: {workflowId}, first: 50)",
            query: "query($w: String!) { sessions(filter: { workflowId: $w }, first: 50) {
                edges { node { id startTime status summary { totalTraces } } } } }",
            variables: |d, i| json!({ "w": workflow(d, i) }),
            sql: format!(
                "SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE workflow_id = $1
                 ORDER BY start_time DESC, id DESC LIMIT 51"
            ),
            param: workflow,
        },
        Read {
            name: "traces(sessionId, first: 100)",
            query: "query($s: ID!) { traces(sessionId: $s, first: 100) { edges { cursor node { id timestamp seq
                duration status source { nodeId portId } target { nodeId portId } data { payload size type } } } } }",
            variables: |d, i| json!({ "s": session(d, i) }),
            sql: format!(
                "SELECT {TRACE_COLUMNS} FROM flow_traces WHERE session_id = $1 ORDER BY timestamp, seq LIMIT 101"
            ),
            param: session,
        },
        Read {
            name: "session(id) with traces(first: 20)",
            query: "query($s: ID!) { session(id: $s) { id status startTime summary { totalTraces }
                traces(first: 20) { edges { node { id timestamp status source { nodeId } target { nodeId }
                data { payload } } } } } }",
            variables: |d, i| json!({ "s": session(d, i) }),
            sql: format!(
                "SELECT s.*, t.* FROM (SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE id = $1) s
                 LEFT JOIN LATERAL (SELECT {TRACE_COLUMNS} FROM flow_traces WHERE session_id = s.id
                     ORDER BY timestamp, seq LIMIT 21) t ON TRUE"
            ),
            param: session,
        },
    ]
}

/// What `runs` requests cost: wall p50/p99 (ms), database time per request (µs), statements per request, server
/// CPU per request (µs).
struct Cost {
    p50: f64,
    p99: f64,
    db_us: Option<f64>,
    statements: Option<f64>,
    cpu_us: Option<f64>,
    /// PostgreSQL backends' CPU per request (µs), see `backends_cpu`.
    backend_us: Option<f64>,
}

/// Planning and execution time (ms) and calls of every statement since the last reset, on the bench database,
/// leaving out the statistics' own queries.
async fn statements(server: &Server) -> anyhow::Result<Option<(f64, f64)>> {
    if !server.stat_statements {
        return Ok(None);
    }
    let (ms, calls): (Option<f64>, Option<i64>) = sqlx::query_as(
        "SELECT sum(total_exec_time + total_plan_time), sum(calls)::bigint FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND query NOT LIKE '%pg_stat_statements%'",
    )
    .fetch_one(server.store.pool())
    .await?;
    Ok(Some((ms.unwrap_or(0.0), calls.unwrap_or(0) as f64)))
}

/// CPU seconds used so far by each PostgreSQL backend connected to the bench database, when the cluster runs on this
/// machine (empty otherwise). Unlike `pg_stat_statements`, which times planning and running, this is everything a
/// request costs the database: the protocol, parsing, locking every chunk of a generic plan, executor start and end.
async fn backends_cpu(server: &Server) -> anyhow::Result<HashMap<u32, f64>> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'",
    )
    .fetch_all(server.store.pool())
    .await?;
    Ok(pids
        .into_iter()
        .filter_map(|pid| {
            let pid = u32::try_from(pid).ok()?;
            // A remote cluster's pid may name an unrelated local process.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            cmdline.starts_with(b"postgres:").then(|| Some((pid, process_cpu_seconds(pid)?)))?
        })
        .collect())
}

/// CPU seconds the backends used between two `backends_cpu` samples; a backend that started in between counts whole.
fn backends_used(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> Option<f64> {
    (!after.is_empty()).then(|| after.iter().map(|(pid, cpu)| cpu - before.get(pid).unwrap_or(&0.0)).sum())
}

async fn reset(server: &Server) -> anyhow::Result<()> {
    if server.stat_statements {
        sqlx::query("SELECT pg_stat_statements_reset()").execute(server.store.pool()).await?;
    }
    Ok(())
}

/// Runs `one(i)` `runs` times in a row after a short warm-up and says what it cost.
async fn measure<F, Fut>(server: &Server, runs: usize, server_cpu: bool, mut one: F) -> anyhow::Result<Cost>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for i in 0..runs / 10 + 1 {
        one(i).await?;
    }
    reset(server).await?;
    let backends = backends_cpu(server).await?;
    let cpu = server.cpu_seconds();
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        one(i).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let cpu = cpu.zip(server.cpu_seconds()).filter(|_| server_cpu).map(|(a, b)| (b - a) / runs as f64 * 1e6);
    let backend_us = backends_used(&backends, &backends_cpu(server).await?).map(|s| s / runs as f64 * 1e6);
    let stats = statements(server).await?;
    let (p50, p99) = percentiles(times);
    Ok(Cost {
        p50,
        p99,
        db_us: stats.map(|(ms, _)| ms * 1000.0 / runs as f64),
        statements: stats.map(|(_, calls)| calls / runs as f64),
        cpu_us: cpu,
        backend_us,
    })
}

/// Requests per second from 8 clients for `secs`.
async fn throughput<F, Fut>(secs: f64, one: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let one = Arc::new(one);
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + StdDuration::from_secs_f64(secs);
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (one, done) = (one.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = c * 1_000_003;
                while Instant::now() < until {
                    one(i).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for client in clients {
        client.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn us(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.0} µs"))
}

pub async fn run(server: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let (sessions, per_session) = if sizes.quick { (100, 50) } else { (2_000, 500) };
    let started = Instant::now();
    let data = Arc::new(generate(server, sessions, per_session, Duration::days(10), ("bench-cost", 20)).await?);
    report.add(
        "costs",
        "dataset generated (server-side INSERT)",
        format!("{sessions} sessions × {per_session} traces over 10 days in {:.0} s", started.elapsed().as_secs_f64()),
        "",
        None,
    );
    let rss_before = server.rss_mib();
    let runs = if sizes.quick { 50 } else { 2_000 };
    for read in reads() {
        let read = Arc::new(read);
        let (client, pool) = (server.client(), server.store.pool().clone());
        let api = measure(server, runs, true, |i| read.api(&client, &data, i)).await?;
        let direct = measure(server, runs, false, |i| read.direct(&pool, &data, i)).await?;
        report.add(
            "costs",
            &format!("{}: API wall p50/p99, database per request (statements), server CPU per request", read.name),
            format!(
                "{:.2}/{:.2} ms, {} ({}), {}",
                api.p50,
                api.p99,
                us(api.db_us),
                api.statements.map_or("n/a".into(), |n| format!("{n:.1}")),
                us(api.cpu_us)
            ),
            "",
            None,
        );
        report.add(
            "costs",
            &format!("{}: one statement for the same rows, wall p50/p99, database per call", read.name),
            format!("{:.2}/{:.2} ms, {}", direct.p50, direct.p99, us(direct.db_us)),
            "",
            None,
        );
        report.add(
            "costs",
            &format!("{}: PostgreSQL backends' CPU per request, API vs one statement", read.name),
            format!("{} vs {}", us(api.backend_us), us(direct.backend_us)),
            "",
            None,
        );
        if let (Some(cpu), Some(db)) = (api.cpu_us, api.db_us) {
            report.add(
                "costs",
                &format!("{}: server CPU / database time per request", read.name),
                format!("{:.2}x", cpu / db),
                "<= 1x",
                Some(cpu <= db),
            );
        }
        if let (Some(api_db), Some(direct_db)) = (api.db_us, direct.db_us) {
            report.add(
                "costs",
                &format!("{}: database time per request, API / one statement", read.name),
                format!("{:.2}x", api_db / direct_db),
                // The same statement measured twice differs by a few per cent from run to run.
                "<= 1x (within 5 %)",
                Some(api_db <= direct_db * 1.05),
            );
        }

        let secs = if sizes.quick { 1.0 } else { 10.0 };
        let (r, d, c) = (read.clone(), data.clone(), client.clone());
        let api_rate = throughput(secs, move |i| {
            let (r, d, c) = (r.clone(), d.clone(), c.clone());
            async move { r.api(&c, &d, i).await }
        })
        .await?;
        let (r, d, p) = (read.clone(), data.clone(), pool.clone());
        let direct_rate = throughput(secs, move |i| {
            let (r, d, p) = (r.clone(), d.clone(), p.clone());
            async move { r.direct(&p, &d, i).await }
        })
        .await?;
        report.add(
            "costs",
            &format!("{}: 8 clients, API vs the statement from a pool of 8", read.name),
            format!("{api_rate:.0} vs {direct_rate:.0} requests/s ({:.2}x)", api_rate / direct_rate),
            "",
            None,
        );
    }
    tokio::time::sleep(StdDuration::from_secs(5)).await;
    if let (Some(before), Some(after)) = (rss_before, server.rss_mib()) {
        report.add(
            "memory",
            "server RSS before / after the costs phase (5 s idle)",
            format!("{before:.0} / {after:.0} MiB"),
            "",
            None,
        );
    }
    Ok(())
}
