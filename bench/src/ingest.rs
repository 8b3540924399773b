//! Ingest: recordTraces over HTTP (batches of 1 000, 4 writers) vs COPY of the same rows into the same table, into
//! the same hypertable with its primary key alone (the storage's own limit, without the indexes the reads need), and
//! one INSERT per trace.

use std::time::Instant;

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

use crate::Sizes;
use crate::report::Report;
use crate::server::Server;

const BATCH: usize = 1_000;
const WRITERS: usize = 4;
const RECORD: &str =
    "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted duplicates } }";

fn trace(i: usize) -> Value {
    json!({
        "id": Uuid::new_v4(),
        "timestamp": (Utc::now() - Duration::milliseconds((i % 3_600_000) as i64)).to_rfc3339(),
        "duration": (i % 500) as f64 * 0.7,
        "status": if i.is_multiple_of(97) { "ERROR" } else { "SUCCESS" },
        "source": { "nodeId": format!("node-{}", i % 10), "portId": "out" },
        "target": { "nodeId": format!("node-{}", (i + 1) % 10), "portId": "in" },
        "data": { "payload": { "n": i, "label": "benchmark row" }, "type": "json" },
    })
}

pub async fn run(server: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let mut sessions = Vec::new();
    for w in 0..WRITERS {
        let data = server
            .gql(
                "mutation($i: StartSessionInput!) { startSession(input: $i) { id } }",
                json!({ "i": { "workflowId": format!("bench-ingest-{w}"), "workflowName": "ingest" } }),
            )
            .await?;
        sessions.push(data["startSession"]["id"].as_str().unwrap_or_default().to_owned());
    }
    // Bodies are built before the clock starts: the client's JSON work is not the server's.
    let batches: Vec<Vec<u8>> = (0..sizes.traces.div_ceil(BATCH))
        .map(|b| {
            let traces: Vec<Value> = (b * BATCH..((b + 1) * BATCH).min(sizes.traces)).map(trace).collect();
            serde_json::to_vec(&json!({ "query": RECORD, "variables": { "s": sessions[b % WRITERS], "t": traces } }))
                .unwrap_or_default()
        })
        .collect();
    server.reset_peak_rss();
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mine: Vec<Vec<u8>> = batches.iter().skip(w).step_by(WRITERS).cloned().collect();
        let (http, url) = (server.http.clone(), format!("{}/graphql", server.base));
        writers.push(tokio::spawn(async move {
            for body in mine {
                let res: Value =
                    http.post(&url).header("content-type", "application/json").body(body).send().await?.json().await?;
                anyhow::ensure!(res.get("errors").is_none(), "ingest failed: {res}");
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let api_rate = sizes.traces as f64 / started.elapsed().as_secs_f64();
    let api_rss = server.peak_rss_mib();
    drop(batches);

    // COPY of equivalent rows (same columns that carry data) into the same table.
    let mut csv = Vec::with_capacity(sizes.traces * 200);
    let session = Uuid::new_v4().to_string();
    for i in 0..sizes.traces {
        let t = trace(i);
        let payload = t["data"]["payload"].to_string().replace('"', "\"\"");
        csv.extend_from_slice(
            format!(
                "{},{},{},{},bench-copy,{},{},{},out,{},in,\"{}\",{},json\n",
                t["id"].as_str().unwrap_or_default(),
                t["timestamp"].as_str().unwrap_or_default(),
                1_000_000_000_000u64 + i as u64,
                session,
                t["duration"],
                t["status"].as_str().unwrap_or_default(),
                t["source"]["nodeId"].as_str().unwrap_or_default(),
                t["target"]["nodeId"].as_str().unwrap_or_default(),
                payload,
                payload.len(),
            )
            .as_bytes(),
        );
    }
    let mut conn = sqlx::PgConnection::connect(&server.url).await?;
    let copy_rate = copy(&mut conn, "flow_traces", &csv).await?;
    sqlx::raw_sql(
        "CREATE TABLE bench_pk_traces (LIKE flow_traces INCLUDING DEFAULTS);
         ALTER TABLE bench_pk_traces ADD PRIMARY KEY (id, timestamp)",
    )
    .execute(&mut conn)
    .await?;
    if server.timescaledb {
        sqlx::query(
            "SELECT create_hypertable('bench_pk_traces', by_range('timestamp', INTERVAL '1 day'),
                create_default_indexes => false)",
        )
        .execute(&mut conn)
        .await?;
    }
    let pk_rate = copy(&mut conn, "bench_pk_traces", &csv).await?;
    sqlx::query("DROP TABLE bench_pk_traces").execute(&mut conn).await?;
    drop(csv);

    // One INSERT per trace, each its own transaction: what the replaced service did.
    let started = Instant::now();
    for i in 0..sizes.per_row {
        let t = trace(i);
        sqlx::query(
            "INSERT INTO flow_traces (id, timestamp, seq, session_id, workflow_id, duration, status, source_node_id,
                source_port_id, target_node_id, target_port_id, data_payload, data_size, data_type)
             VALUES ($1, $2::timestamptz, nextval('flow_trace_seq'), $3, 'bench-rows', $4, $5, $6, 'out', $7, 'in', $8, $9, 'json')",
        )
        .bind(Uuid::new_v4().to_string())
        .bind(t["timestamp"].as_str().unwrap_or_default())
        .bind(&session)
        .bind(t["duration"].as_f64())
        .bind(t["status"].as_str().unwrap_or_default())
        .bind(t["source"]["nodeId"].as_str().unwrap_or_default())
        .bind(t["target"]["nodeId"].as_str().unwrap_or_default())
        .bind(&t["data"]["payload"])
        .bind(t["data"]["payload"].to_string().len() as i64)
        .execute(&mut conn)
        .await?;
    }
    let row_rate = sizes.per_row as f64 / started.elapsed().as_secs_f64();
    conn.close().await?;

    let vs_copy = api_rate / copy_rate;
    let vs_pk = api_rate / pk_rate;
    let vs_rows = api_rate / row_rate;
    report.add("ingest", "recordTraces over HTTP (1k batches, 4 writers)", format!("{api_rate:.0} traces/s"), "", None);
    report.add("ingest", "COPY of the same rows", format!("{copy_rate:.0} rows/s"), "", None);
    report.add("ingest", "COPY of the same rows, primary key alone", format!("{pk_rate:.0} rows/s"), "", None);
    report.add("ingest", "one INSERT per trace", format!("{row_rate:.0} rows/s"), "", None);
    report.add("ingest", "API / COPY", format!("{vs_copy:.2}x"), ">= 0.5x", Some(vs_copy >= 0.5));
    report.add(
        "ingest",
        "API / COPY with the primary key alone",
        format!("{vs_pk:.2}x"),
        ">= 0.5x",
        Some(vs_pk >= 0.5),
    );
    report.add("ingest", "API / per-row INSERT", format!("{vs_rows:.1}x"), ">= 10x", Some(vs_rows >= 10.0));
    if let Some(rss) = api_rss {
        report.add("memory", "server peak RSS during API ingest", format!("{rss:.0} MiB"), "", None);
    }
    Ok(())
}

/// Rows per second of a COPY of `csv` (the columns the benchmark fills) into `table`.
async fn copy(conn: &mut sqlx::PgConnection, table: &str, csv: &[u8]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {table} (id, timestamp, seq, session_id, workflow_id, duration, status, source_node_id,
             source_port_id, target_node_id, target_port_id, data_payload, data_size, data_type)
             FROM STDIN WITH (FORMAT csv)"
        ))
        .await?;
    for chunk in csv.chunks(1 << 20) {
        copy.send(chunk).await?;
    }
    let rows = copy.finish().await?;
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}
