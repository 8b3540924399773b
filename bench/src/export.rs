//! Export: `flowtrace export` (the release binary, as its own process) of `traces` traces spread over ten past days,
//! its time and peak RSS; first of one day only, so the two peaks show whether memory grows with the size.

use std::time::Instant;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Duration, Utc};

use crate::Sizes;
use crate::report::Report;
use crate::server::{Server, flowtrace_binary};

const DAYS: i64 = 10;

pub async fn run(server: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let first: DateTime<Utc> = sqlx::query_scalar("SELECT date_trunc('day', now()) - INTERVAL '12 days'")
        .fetch_one(server.store.pool())
        .await?;
    // Generated in the database: rows like ingest's, spread evenly over the days. Ids are cast on assignment, so
    // this works whether ids are uuid or text.
    sqlx::query(
        "INSERT INTO flow_trace_sessions (id, start_time, workflow_id, workflow_name, status, end_time)
         SELECT gen_random_uuid(), $1 + d * INTERVAL '1 day', 'bench-export', 'export', 'COMPLETED',
                $1 + d * INTERVAL '1 day' + INTERVAL '23 hours'
         FROM generate_series(0, $2 - 1) d",
    )
    .bind(first)
    .bind(DAYS as i32)
    .execute(server.store.pool())
    .await?;
    sqlx::query(
        "INSERT INTO flow_traces (id, timestamp, seq, session_id, workflow_id, duration, status, source_node_id,
            source_port_id, target_node_id, target_port_id, data_payload, data_size, data_type)
         SELECT gen_random_uuid(), $1 + (i::float8 / $2) * $3 * INTERVAL '1 day', 2000000000000 + i,
                gen_random_uuid(), 'bench-export', (i % 500) * 0.7, CASE WHEN i % 97 = 0 THEN 'ERROR' ELSE 'SUCCESS' END,
                'node-' || (i % 10), 'out', 'node-' || ((i + 1) % 10), 'in',
                jsonb_build_object('n', i, 'label', 'benchmark row'), 36, 'json'
         FROM generate_series(0, $2 - 1) i",
    )
    .bind(first)
    .bind(sizes.traces as i64)
    .bind(DAYS as f64)
    .execute(server.store.pool())
    .await?;

    let out = std::env::temp_dir().join(format!("flowtrace-bench-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (one_day_secs, one_day_rss) = export(server, &out, first, first + Duration::days(1)).await?;
    let _ = std::fs::remove_dir_all(&out);
    let (secs, rss) = export(server, &out, first, first + Duration::days(DAYS)).await?;
    let bytes: u64 = walk_size(&out.join("flow_traces"))?;
    let _ = std::fs::remove_dir_all(&out);

    let rate = sizes.traces as f64 / secs;
    report.add(
        "export",
        &format!("flowtrace export of {} traces over {DAYS} days", sizes.traces),
        format!("{secs:.1} s, {rate:.0} rows/s"),
        "",
        None,
    );
    report.add("export", "Parquet size of the traces", format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64), "", None);
    report.add(
        "export",
        "export peak RSS, one day (a tenth of the rows)",
        format!("{one_day_rss:.0} MiB ({one_day_secs:.1} s)"),
        "",
        None,
    );
    report.add(
        "export",
        "export peak RSS, all days",
        format!("{rss:.0} MiB"),
        "bounded: <= one day's + 50 %",
        Some(rss <= one_day_rss * 1.5),
    );
    Ok(())
}

/// Runs the export as a child process; returns its seconds and peak RSS in MiB.
async fn export(
    server: &Server,
    out: &std::path::Path,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let output = tokio::process::Command::new(flowtrace_binary()?)
        .args(["export", "--out"])
        .arg(out)
        .args(["--from", &from.to_rfc3339(), "--to", &to.to_rfc3339()])
        .env("DATABASE_URL", &server.url)
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    let secs = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!("flowtrace export failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    eprintln!("[export] {}", String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or(""));
    // The largest RSS of any child waited for so far: the server is still running, so this is the export's (each
    // run is measured after a smaller or equal one).
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .context("getrusage of children")?;
    Ok((secs, usage.max_rss() as f64 / 1024.0))
}

fn walk_size(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}
