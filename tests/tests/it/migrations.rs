//! Migrations build the schema, roll back completely and build it again.

use crate::harness::{empty_db, require_timescaledb};

async fn count(db: &crate::harness::TestDb, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(db.store.pool()).await.expect(sql)
}

const TABLES: &str = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
    AND tablename IN ('flow_trace_sessions', 'flow_traces', 'flow_trace_events')";
const VIEWS: &str = "SELECT count(*) FROM pg_class WHERE relname IN
    ('session_stats_hourly', 'session_stats_daily', 'node_performance_hourly') AND relkind IN ('v', 'm')";

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = empty_db().await;
    db.store.migrate_up().await.expect("up");
    db.store.migrate_up().await.expect("up again is a no-op");
    assert_eq!(count(&db, TABLES).await, 3);
    assert_eq!(count(&db, VIEWS).await, 3);
    assert!(db.store.migration_status().await.expect("status").iter().all(|(_, applied)| *applied));

    db.store.migrate_down(None).await.expect("down");
    assert_eq!(count(&db, TABLES).await, 0);
    assert_eq!(count(&db, VIEWS).await, 0);
    assert!(db.store.migration_status().await.expect("status").iter().all(|(_, applied)| !*applied));

    db.store.migrate_up().await.expect("up after down");
    assert_eq!(count(&db, TABLES).await, 3);
    assert_eq!(count(&db, VIEWS).await, 3);
}

#[tokio::test]
async fn timescaledb_objects_are_all_present() {
    let db = empty_db().await;
    if !require_timescaledb(&db, "timescaledb_objects_are_all_present") {
        return;
    }
    db.store.migrate_up().await.expect("up");
    let chunk = |table: &str| {
        format!(
            "SELECT extract(epoch FROM time_interval)::bigint FROM timescaledb_information.dimensions
             WHERE hypertable_name = '{table}'"
        )
    };
    assert_eq!(count(&db, &chunk("flow_trace_sessions")).await, 7 * 86400);
    assert_eq!(count(&db, &chunk("flow_traces")).await, 86400);
    assert_eq!(count(&db, &chunk("flow_trace_events")).await, 86400);
    assert_eq!(
        count(&db, "SELECT count(*) FROM timescaledb_information.hypertables WHERE compression_enabled").await,
        3
    );
    for (table, compress, retain) in
        [("flow_trace_sessions", 14, 90), ("flow_traces", 7, 30), ("flow_trace_events", 3, 7)]
    {
        let policy = |proc: &str, key: &str| {
            format!(
                "SELECT extract(day FROM (config->>'{key}')::interval)::bigint FROM timescaledb_information.jobs
                 WHERE proc_name = '{proc}' AND hypertable_name = '{table}'"
            )
        };
        assert_eq!(count(&db, &policy("policy_compression", "compress_after")).await, compress, "{table}");
        assert_eq!(count(&db, &policy("policy_retention", "drop_after")).await, retain, "{table}");
    }
    let segment = "SELECT count(*) FROM timescaledb_information.compression_settings
        WHERE (hypertable_name, attname, segmentby_column_index) IN
        (('flow_trace_sessions', 'workflow_id', 1), ('flow_traces', 'session_id', 1), ('flow_trace_events', 'session_id', 1))";
    assert_eq!(count(&db, segment).await, 3);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM timescaledb_information.continuous_aggregates WHERE NOT materialized_only
             AND view_name IN ('session_stats_hourly', 'session_stats_daily', 'node_performance_hourly')"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'
             AND schedule_interval = INTERVAL '30 minutes'"
        )
        .await,
        3
    );
    // The daily aggregate is built on the hourly one.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM timescaledb_information.continuous_aggregates
             WHERE view_name = 'session_stats_daily' AND view_definition ILIKE '%session_stats_hourly%'"
        )
        .await,
        1
    );

    // Applying the same policies again changes nothing.
    let changed = migration::Policies::default().apply(db.store.orm()).await.expect("apply");
    assert!(changed.is_empty(), "{changed:?}");

    db.store.migrate_down(None).await.expect("down");
    assert_eq!(count(&db, TABLES).await, 0);
    db.store.migrate_up().await.expect("up again");
    assert_eq!(count(&db, "SELECT count(*) FROM timescaledb_information.hypertables").await, 3);
}
