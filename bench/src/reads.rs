//! Reads on a large generated dataset: API latency vs the same store calls made directly, a time-range query on
//! the hypertable vs a plain table, and storage per trace before and after compression.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use flowtrace::store::cursor::Page;
use flowtrace::store::ingest::NODE_MINUTES;
use flowtrace::store::sessions::SessionFilter;
use flowtrace::store::traces::TraceFilter;
use serde_json::json;
use uuid::Uuid;

use crate::Sizes;
use crate::report::{Report, percentiles};
use crate::server::Server;

const SESSIONS: usize = 100;
const STEP_MS: i64 = 50;
/// The read dataset's sessions start over the last 30 days: what a 30-day dashboard range reads.
pub(crate) const SPAN: Duration = Duration::days(30);

pub(crate) struct Dataset {
    /// (session id, workflow id, start)
    pub sessions: Vec<(String, String, DateTime<Utc>)>,
    pub per_session: usize,
}

/// `sessions` sessions of `per_session` traces 50 ms apart, written server-side; their starts are spread evenly over
/// `span` up to now, in `workflows` workflows named `{prefix}-{k}`.
pub(crate) async fn generate(
    server: &Server,
    sessions: usize,
    per_session: usize,
    span: Duration,
    (prefix, workflows): (&str, usize),
) -> anyhow::Result<Dataset> {
    let first = Utc::now() - span;
    let mut made = Vec::new();
    for k in 0..sessions {
        let id = Uuid::new_v4().to_string();
        let workflow = format!("{prefix}-{}", k % workflows);
        let start = first + span / sessions as i32 * k as i32;
        let end = start + Duration::milliseconds(STEP_MS * per_session as i64);
        sqlx::query(
            "INSERT INTO flow_trace_sessions (id, start_time, end_time, status, workflow_id, workflow_name, total_traces)
             VALUES ($1, $2, $3, 'COMPLETED', $4, 'read benchmark', $5)",
        )
        .bind(&id)
        .bind(start)
        .bind(end)
        .bind(&workflow)
        .bind(per_session as i64)
        .execute(server.store.pool())
        .await?;
        sqlx::query(
            "INSERT INTO flow_traces (id, timestamp, seq, session_id, workflow_id, duration, status, source_node_id,
                source_port_id, target_node_id, target_port_id, data_payload, data_size, data_type)
             SELECT gen_random_uuid()::text, $1 + g * INTERVAL '50 milliseconds', nextval('flow_trace_seq'), $2, $3,
                (g % 500) * 0.7, CASE WHEN g % 97 = 0 THEN 'ERROR' ELSE 'SUCCESS' END,
                'node-' || (g % 10), 'out', 'node-' || ((g + 1) % 10), 'in',
                jsonb_build_object('n', g, 'label', 'benchmark row'), 40, 'json'
             FROM generate_series(1, $4) g",
        )
        .bind(start)
        .bind(&id)
        .bind(&workflow)
        .bind(per_session as i64)
        .execute(server.store.pool())
        .await?;
        // The per-minute node rows that ingestion keeps (workflowStateAt reads them), by ingestion's own statement.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH ins AS (
                SELECT session_id, timestamp, status, source_node_id, target_node_id FROM flow_traces
                WHERE session_id = $1
            ), {NODE_MINUTES}
            SELECT 1"
        )))
        .bind(&id)
        .execute(server.store.pool())
        .await?;
        made.push((id, workflow, start));
    }
    sqlx::query("ANALYZE").execute(server.store.pool()).await?;
    Ok(Dataset { sessions: made, per_session })
}

/// Runs `api` and `direct` alternately `runs` times; returns (api p50, api p99, direct p50, direct p99) in ms.
pub(crate) async fn compare<A, D, FA, FD>(
    runs: usize,
    mut api: A,
    mut direct: D,
) -> anyhow::Result<(f64, f64, f64, f64)>
where
    A: FnMut(usize) -> FA,
    D: FnMut(usize) -> FD,
    FA: Future<Output = anyhow::Result<()>>,
    FD: Future<Output = anyhow::Result<()>>,
{
    let (mut a, mut d) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for i in 0..runs + 5 {
        let t = Instant::now();
        direct(i).await?;
        let direct_ms = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        api(i).await?;
        let api_ms = t.elapsed().as_secs_f64() * 1000.0;
        if i >= 5 {
            // The first few warm caches and connections.
            a.push(api_ms);
            d.push(direct_ms);
        }
    }
    let (a50, a99) = percentiles(a);
    let (d50, d99) = percentiles(d);
    Ok((a50, a99, d50, d99))
}

pub(crate) fn add_comparison(report: &mut Report, name: &str, (a50, a99, d50, d99): (f64, f64, f64, f64)) {
    let ratio = a50 / d50;
    report.add(
        "reads",
        &format!("{name}: API p50/p99 vs direct p50/p99"),
        format!("{a50:.1}/{a99:.1} vs {d50:.1}/{d99:.1} ms"),
        "",
        None,
    );
    report.add("reads", &format!("{name}: API / direct (p50)"), format!("{ratio:.2}x"), "<= 1.5x", Some(ratio <= 1.5));
}

pub async fn run(server: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let started = Instant::now();
    let per_session = (sizes.dataset / SESSIONS).max(1);
    let data = generate(server, SESSIONS, per_session, SPAN, ("bench-read", 10)).await?;
    let (rows, secs) = (per_session * SESSIONS, started.elapsed().as_secs_f64());
    report.add("reads", "dataset generated (server-side INSERT)", format!("{rows} traces in {secs:.0} s"), "", None);
    server.reset_peak_rss();
    let store = &server.store;
    let pick = |i: usize| &data.sessions[(i * 37) % data.sessions.len()];
    let window = |i: usize| {
        let (_, _, start) = pick(i);
        let from = *start + Duration::milliseconds(STEP_MS * ((i * 7919) % data.per_session.max(1)) as i64);
        (from, from + Duration::minutes(5))
    };

    let q = "query($s: ID!, $from: DateTime!, $to: DateTime!) { traces(sessionId: $s, from: $from, to: $to, first: 100) {
        edges { cursor node { id timestamp seq duration status source { nodeId portId } target { nodeId portId } data { payload size type } } } } }";
    let result = compare(
        sizes.query_runs,
        |i| async move {
            let (from, to) = window(i);
            server.read(q, json!({ "s": pick(i).0, "from": from, "to": to })).await
        },
        |i| async move {
            let (from, to) = window(i);
            let filter = TraceFilter {
                session_id: Some(pick(i).0.clone()),
                from: Some(from),
                to: Some(to),
                ..Default::default()
            };
            let page = Page { after: None, before: None, limit: 100, from_end: false };
            store.traces(&filter, &page).await.map(|_| ()).map_err(Into::into)
        },
    )
    .await?;
    add_comparison(report, "traces(sessionId, from, to, first: 100)", result);

    let q = "query($w: String!) { sessions(filter: { workflowId: $w }, first: 50) { edges { node { id startTime status summary { totalTraces } } } } }";
    let result = compare(
        sizes.query_runs,
        |i| async move { server.read(q, json!({ "w": pick(i).1 })).await },
        |i| async move {
            let filter = SessionFilter { workflow_id: Some(pick(i).1.clone()), ..Default::default() };
            let page = Page { after: None, before: None, limit: 50, from_end: false };
            store.sessions(&filter, &page).await.map(|_| ()).map_err(Into::into)
        },
    )
    .await?;
    add_comparison(report, "sessions(filter: {workflowId}, first: 50)", result);

    let q = "query($w: String!, $at: DateTime!) { workflowStateAt(workflowId: $w, at: $at) { sessionStatus
        nodes { nodeId status inputCount outputCount lastInput { id } lastOutput { id } lastError { message } } } }";
    let runs = (sizes.query_runs / 4).max(10);
    let result = compare(
        runs,
        |i| async move { server.read(q, json!({ "w": pick(i).1, "at": window(i).1 })).await },
        |i| async move { store.workflow_state_at(&pick(i).1, window(i).1).await.map(|_| ()).map_err(Into::into) },
    )
    .await?;
    add_comparison(report, &format!("workflowStateAt (sessions of {} traces)", data.per_session), result);

    let q = "query($s: ID!, $at: DateTime!) { sessionStateAt(sessionId: $s, at: $at) { sessionStatus
        nodes { nodeId status inputCount outputCount lastInput { id } lastOutput { id } lastError { message } } } }";
    let result = compare(
        runs,
        |i| async move { server.read(q, json!({ "s": pick(i).0, "at": window(i).1 })).await },
        |i| async move { store.session_state_at(&pick(i).0, window(i).1).await.map(|_| ()).map_err(Into::into) },
    )
    .await?;
    add_comparison(report, &format!("sessionStateAt (sessions of {} traces)", data.per_session), result);

    let q = "query($s: ID!) { executionTimeline(sessionId: $s, bucketSeconds: 60) { bucket traceCount errorCount avgDuration maxDuration dataSize activeNodes } }";
    let result = compare(
        runs,
        |i| async move { server.read(q, json!({ "s": pick(i).0 })).await },
        |i| async move { store.execution_timeline(&pick(i).0, 60, None, None).await.map(|_| ()).map_err(Into::into) },
    )
    .await?;
    add_comparison(report, "executionTimeline(bucketSeconds: 60)", result);
    if server.timescaledb {
        plain_copies(server).await?;
    }
    crate::analytics::run(server, &data, runs, report).await?;
    crate::analytics::against_raw(server, sizes, report).await?;
    if let Some(rss) = server.peak_rss_mib() {
        report.add("memory", "server peak RSS during reads", format!("{rss:.0} MiB"), "", None);
    }

    if server.timescaledb {
        // Chunks older than a day are compressed for the storage figures, as the compression policy does after
        // 7 days; the newest stay as they are, because the live phase writes into them next. The range aggregate is
        // measured on the sessions inside the compressed span: on a plain copy with the same time index, on the
        // hypertable as ingested, and again once those chunks are compressed.
        let pool = server.store.pool();
        let cutoff: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(range_end) FROM timescaledb_information.chunks
             WHERE hypertable_name = 'flow_traces' AND range_end <= now() - INTERVAL '1 day'",
        )
        .fetch_one(pool)
        .await?;
        let Some(cutoff) = cutoff else {
            report.add("storage", "compression", "n/a (no chunk older than a day)".into(), ">= 90% smaller", None);
            return Ok(());
        };
        let ranges: Vec<DateTime<Utc>> = data
            .sessions
            .iter()
            .map(|(_, _, start)| *start)
            .filter(|start| *start + Duration::hours(1) <= cutoff)
            .collect();
        sqlx::query("VACUUM ANALYZE flow_traces").execute(pool).await?;
        // Each pair is measured interleaved (same windows, same moment), so the ratio does not depend on what else
        // the machine was doing during one of them.
        let [plain_then, hyper] =
            range_aggregate_p50(server, &ranges, sizes, ["bench_plain_traces", "flow_traces"]).await?;
        compression(server, cutoff, report).await?;
        let [plain, compressed] =
            range_aggregate_p50(server, &ranges, sizes, ["bench_plain_traces", "flow_traces"]).await?;
        sqlx::query("DROP TABLE bench_plain_traces, bench_plain_sessions").execute(pool).await?;
        report.add(
            "reads",
            "1-hour range aggregate p50, plain table (same time index) vs hypertable: as ingested / compressed",
            format!("{plain_then:.1} vs {hyper:.1} / {plain:.1} vs {compressed:.1} ms"),
            "",
            None,
        );
        report.add(
            "reads",
            "hypertable (uncompressed chunks) speed-up over plain",
            format!("{:.2}x", plain_then / hyper),
            "",
            None,
        );
        let speedup = plain / compressed;
        report.add(
            "reads",
            "hypertable (compressed chunks) speed-up over plain",
            format!("{speedup:.2}x"),
            ">= 10x",
            Some(speedup >= 10.0),
        );
    } else {
        report.add("reads", "hypertable vs plain table", "n/a (plain mode)".into(), ">= 10x", None);
        report.add("storage", "compression", "n/a (plain mode)".into(), ">= 90% smaller", None);
    }
    Ok(())
}

/// Plain tables holding the hypertables' rows, with the hypertables' indexes that the compared queries can use:
/// the time index (range aggregates) and the workflow indexes (analytics computed from raw rows).
async fn plain_copies(server: &Server) -> anyhow::Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE bench_plain_traces (LIKE flow_traces INCLUDING DEFAULTS);
         INSERT INTO bench_plain_traces SELECT * FROM flow_traces;
         CREATE INDEX ON bench_plain_traces (timestamp DESC);
         CREATE INDEX ON bench_plain_traces (workflow_id, timestamp, seq);
         CREATE TABLE bench_plain_sessions (LIKE flow_trace_sessions INCLUDING DEFAULTS);
         CREATE INDEX ON bench_plain_sessions (start_time DESC, id DESC);
         CREATE INDEX ON bench_plain_sessions (workflow_id, start_time DESC);",
    )
    .execute(server.store.pool())
    .await?;
    sqlx::query("VACUUM ANALYZE bench_plain_traces").execute(server.store.pool()).await?;
    Ok(())
}

/// p50 of a one-hour count/avg/sum over each of `tables`, from one of `starts` each run, the tables taking turns.
async fn range_aggregate_p50<const N: usize>(
    server: &Server,
    starts: &[DateTime<Utc>],
    sizes: &Sizes,
    tables: [&str; N],
) -> anyhow::Result<[f64; N]> {
    let sql = tables.map(|table| {
        format!("SELECT count(*), avg(duration), sum(data_size) FROM {table} WHERE timestamp >= $1 AND timestamp < $2")
    });
    let mut times: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    for i in 0..sizes.query_runs + 5 {
        let start = starts[(i * 37) % starts.len()];
        for (sql, times) in sql.iter().zip(times.iter_mut()) {
            let t = Instant::now();
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(start)
                .bind(start + Duration::hours(1))
                .fetch_one(server.store.pool())
                .await?;
            if i >= 5 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    Ok(times.map(|times| percentiles(times).0))
}

async fn compression(server: &Server, cutoff: DateTime<Utc>, report: &mut Report) -> anyhow::Result<()> {
    let pool = server.store.pool();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_traces WHERE timestamp < $1")
        .bind(cutoff)
        .fetch_one(pool)
        .await?;
    let started = Instant::now();
    sqlx::query(
        "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('flow_traces', older_than => $1) c",
    )
    .bind(cutoff)
    .execute(pool)
    .await?;
    let took = started.elapsed().as_secs_f64();
    // Table, index and TOAST bytes of exactly the chunks compressed, before and after.
    let (before, after): (i64, i64) = sqlx::query_as(
        "SELECT sum(before_compression_total_bytes)::bigint, sum(after_compression_total_bytes)::bigint
         FROM chunk_compression_stats('flow_traces') WHERE compression_status = 'Compressed'",
    )
    .fetch_one(pool)
    .await?;
    let (b, a) = (before as f64 / rows as f64, after as f64 / rows as f64);
    let smaller = 100.0 * (1.0 - a / b);
    report.add("storage", "bytes per trace before / after compression", format!("{b:.0} / {a:.0} B"), "", None);
    report.add(
        "storage",
        &format!("compression of {rows} traces (took {took:.0} s)"),
        format!("{smaller:.1}% smaller"),
        ">= 90% smaller",
        Some(smaller >= 90.0),
    );
    Ok(())
}
