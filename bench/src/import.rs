//! Import: `flowtrace import` (the real binary) of the replaced service's main-database tables, against a COPY of the
//! same rows into the same table. The source is a database of its own in the same cluster, made from the fixtures the
//! tests use.

use std::time::Instant;

use anyhow::{Context, bail};
use sqlx::Connection;

use crate::Sizes;
use crate::report::Report;
use crate::server::{Server, flowtrace_binary};

const SOURCE_DB: &str = "flowtrace_bench_import_source";
const DDL: &str = include_str!("../../tests/fixtures/replaced_service_main.sql");
const FILL: &str = include_str!("../../tests/fixtures/replaced_service_main_fill.sql");
const PER_SESSION: usize = 1_000;

/// The rows the import stores, as `COPY flow_traces (…)` takes them: what the baseline loads.
const AS_STORED: &str = "COPY (SELECT 'copy-' || t.id, 'copy-' || t.\"sessionId\", s.\"workflowId\",
        nextval('bench_copy_seq'), t.timestamp AT TIME ZONE 'UTC', t.duration, upper(t.status),
        t.\"sourceNodeId\", t.\"sourceNodeName\", t.\"sourceNodeType\", t.\"sourcePortId\", t.\"sourcePortName\",
        t.\"sourcePortType\", t.\"targetNodeId\", t.\"targetNodeName\", t.\"targetNodeType\", t.\"targetPortId\",
        t.\"targetPortName\", t.\"targetPortType\", t.\"dataPayload\", t.\"dataSize\", t.\"dataType\",
        t.\"dataPreview\", t.\"errorMessage\", t.\"errorCode\", t.\"errorStack\", COALESCE(t.\"graphId\", 'main'),
        t.\"graphName\", t.\"parentTraceId\", COALESCE(t.depth, 0)
    FROM flow_traces t JOIN flow_trace_sessions s ON s.id = t.\"sessionId\") TO STDOUT";

const COPY_IN: &str = "COPY flow_traces (id, session_id, workflow_id, seq, timestamp, duration, status,
        source_node_id, source_node_name, source_node_type, source_port_id, source_port_name, source_port_type,
        target_node_id, target_node_name, target_node_type, target_port_id, target_port_name, target_port_type,
        data_payload, data_size, data_type, data_preview, error_message, error_code, error_stack, graph_id, graph_name,
        parent_trace_id, depth) FROM STDIN";

pub async fn run(server: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let sessions = sizes.import.div_ceil(PER_SESSION).max(1);
    let traces = sessions * PER_SESSION;
    let (base, _) = server.url.rsplit_once('/').context("the bench database URL ends in /<database>")?;
    let source_url = format!("{base}/{SOURCE_DB}");
    let mut admin = sqlx::PgConnection::connect(&server.url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {SOURCE_DB} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {SOURCE_DB}"))).execute(&mut admin).await?;
    let mut source = sqlx::PgConnection::connect(&source_url).await?;
    let fill = FILL.replace("{sessions}", &sessions.to_string()).replace("{traces}", &PER_SESSION.to_string());
    let started = Instant::now();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{DDL}\n{fill}\nCREATE SEQUENCE bench_copy_seq")))
        .execute(&mut source)
        .await?;
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut source).await?;
    let secs = started.elapsed().as_secs_f64();
    report.add(
        "import",
        "source generated (replaced service, main PostgreSQL)",
        format!("{traces} traces in {secs:.0} s"),
        "",
        None,
    );

    // Baseline: the same rows, already in flow_traces' form, by COPY into flow_traces (read before the clock starts).
    let mut rows = Vec::new();
    {
        use futures::TryStreamExt;
        let mut out = source.copy_out_raw(AS_STORED).await?;
        while let Some(chunk) = out.try_next().await? {
            rows.extend_from_slice(&chunk);
        }
    }
    source.close().await?;
    let started = Instant::now();
    let mut copy = admin.copy_in_raw(COPY_IN).await?;
    for chunk in rows.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    copy.finish().await?;
    let copy_rate = traces as f64 / started.elapsed().as_secs_f64();
    drop(rows);
    admin.close().await?;

    let started = Instant::now();
    let output = tokio::process::Command::new(flowtrace_binary()?)
        .args(["import", "--from", &source_url])
        .env("DATABASE_URL", &server.url)
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    let import_secs = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("flowtrace import failed ({}): {stdout}{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let last = stdout.lines().last().unwrap_or_default();
    if !last.contains(&format!("flow_traces {traces} new")) {
        bail!("flowtrace import did not store {traces} traces: {last}");
    }
    let import_rate = traces as f64 / import_secs;
    let ratio = import_rate / copy_rate;
    let mode = if server.timescaledb { "TimescaleDB" } else { "plain" };
    report.add(
        "import",
        &format!("flowtrace import ({mode}, whole process)"),
        format!("{import_rate:.0} traces/s"),
        "",
        None,
    );
    report.add("import", "COPY of the same rows into flow_traces", format!("{copy_rate:.0} rows/s"), "", None);
    report.add("import", "import / COPY", format!("{ratio:.2}x"), ">= 0.5x", Some(ratio >= 0.5));
    Ok(())
}
