//! Percentile-ready aggregates: `edge_stats_hourly` and `session_stats_hourly` gain `duration_histogram`, the fixed
//! log-scale histogram of `histogram` (trace durations per edge, durations of the sessions that ended), which queries
//! merge over any range. `session_stats_daily` keeps its shape: an element-wise sum of arrays is no aggregate a
//! continuous aggregate can use, so session percentiles merge the hourly histograms.
//!
//! A continuous aggregate cannot gain a column: both are dropped and created again (with the views built on them),
//! empty, and filled from the raw rows by real-time aggregation and the refresh policies, which are applied again.
//! `down` builds the previous shapes the same way.

use sea_orm_migration::prelude::*;

use crate::m20261124_000004_continuous_aggregates::{SESSION_MS, session_stats_daily, session_stats_hourly};
use crate::m20261203_000010_edge_stats::{NODE_PERFORMANCE, edge_stats_hourly};
use crate::policies::Policies;
use crate::{histogram, mode, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Drops the aggregates and views on them, and builds them with or without the histograms.
async fn rebuild(manager: &SchemaManager<'_>, histograms: bool) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let timescaledb = mode::timescaledb_created(conn).await?;
    let (kind, aggregate, hour, day) = if timescaledb {
        (
            "MATERIALIZED VIEW",
            "histogram",
            "time_bucket(INTERVAL '1 hour', {t})",
            "time_bucket(INTERVAL '1 day', bucket)",
        )
    } else {
        ("VIEW", "flowtrace_histogram", "date_trunc('hour', {t}, 'UTC')", "date_trunc('day', bucket, 'UTC')")
    };
    let create = |name: &str, query: String| {
        if timescaledb {
            format!(
                "CREATE MATERIALIZED VIEW {name}
                 WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS {query} WITH NO DATA"
            )
        } else {
            format!("CREATE VIEW {name} AS {query}")
        }
    };
    let column = |expr: &str| {
        if histograms { format!(", {} AS duration_histogram", histogram::of(aggregate, expr)) } else { String::new() }
    };
    let mut statements = vec![
        "DROP VIEW IF EXISTS node_performance_hourly".to_owned(),
        format!("DROP {kind} IF EXISTS edge_stats_hourly"),
        format!("DROP {kind} IF EXISTS session_stats_daily"),
        format!("DROP {kind} IF EXISTS session_stats_hourly"),
    ];
    if !timescaledb {
        let functions = if histograms { histogram::PLAIN_AGGREGATE } else { histogram::DROP_PLAIN_AGGREGATE };
        statements.extend(functions.map(str::to_owned));
    }
    statements.extend([
        create("edge_stats_hourly", edge_stats_hourly(&hour.replace("{t}", "timestamp"), &column("duration"))),
        NODE_PERFORMANCE.to_owned(),
        create("session_stats_hourly", session_stats_hourly(&hour.replace("{t}", "start_time"), &column(SESSION_MS))),
        create("session_stats_daily", session_stats_daily(day)),
    ]);
    // Dropping an aggregate dropped its refresh policy. Added here with its first run one interval away: a policy
    // added without one runs at once, and the aggregates need no refresh to be exact (real-time aggregation covers
    // what was never materialised). `apply` then finds them as configured.
    let policies = Policies::default();
    if timescaledb {
        for a in &policies.aggregates {
            statements.push(format!(
                "SELECT add_continuous_aggregate_policy('{}', start_offset => INTERVAL '{}', end_offset => INTERVAL '{}',
                    schedule_interval => INTERVAL '{every}', initial_start => now() + INTERVAL '{every}')",
                a.view,
                a.start_offset,
                a.end_offset,
                every = policies.refresh_every
            ));
        }
    }
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    run_all(manager, &statements).await?;
    policies.apply(conn).await?;
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, false).await
    }
}
