//! Migrations build the schema, roll back completely and build it again.

use crate::harness::{empty_db, require_timescaledb};

async fn count(db: &crate::harness::TestDb, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(db.store.pool()).await.expect(sql)
}

const TABLES: &str = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
    AND tablename IN ('flow_trace_sessions', 'flow_traces', 'flow_trace_events')";
const VIEWS: &str = "SELECT count(*) FROM pg_class WHERE relname IN
    ('session_stats_hourly', 'session_stats_daily', 'edge_stats_hourly', 'node_performance_hourly')
    AND relkind IN ('v', 'm') AND relnamespace = 'public'::regnamespace";
/// The views limited callers read through: one per table or aggregate holding sessions' rows.
const SCOPED: &str = "SELECT count(*) FROM pg_views WHERE schemaname = 'flowtrace_scoped'";
/// Columns of a table that its scoped view lacks (a migration that adds columns must make the view again).
const UNSCOPED_COLUMNS: &str = "SELECT count(*) FROM information_schema.columns c
    WHERE c.table_schema = 'public'
      AND c.table_name IN (SELECT table_name FROM information_schema.views WHERE table_schema = 'flowtrace_scoped')
      AND NOT EXISTS (SELECT 1 FROM information_schema.columns v
          WHERE v.table_schema = 'flowtrace_scoped' AND v.table_name = c.table_name AND v.column_name = c.column_name)";

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    let db = empty_db().await;
    db.store.migrate_up().await.expect("up");
    db.store.migrate_up().await.expect("up again is a no-op");
    assert_eq!(count(&db, TABLES).await, 3);
    assert_eq!(count(&db, VIEWS).await, 4);
    assert_eq!(count(&db, SCOPED).await, 11);
    assert_eq!(count(&db, UNSCOPED_COLUMNS).await, 0, "every scoped view shows every column of its table");
    assert!(db.store.migration_status().await.expect("status").iter().all(|(_, applied)| *applied));

    db.store.migrate_down(None).await.expect("down");
    assert_eq!(count(&db, TABLES).await, 0);
    assert_eq!(count(&db, VIEWS).await, 0);
    assert_eq!(count(&db, SCOPED).await, 0);
    assert!(db.store.migration_status().await.expect("status").iter().all(|(_, applied)| !*applied));

    db.store.migrate_up().await.expect("up after down");
    assert_eq!(count(&db, TABLES).await, 3);
    assert_eq!(count(&db, VIEWS).await, 4);
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
             AND view_name IN ('session_stats_hourly', 'session_stats_daily', 'edge_stats_hourly',
                'edge_duration_histograms_hourly', 'session_duration_histograms_hourly')"
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'
             AND schedule_interval = INTERVAL '30 minutes'"
        )
        .await,
        5
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

/// Id columns of the flowtrace tables with their type, as `table.column type`.
async fn id_column_types(db: &crate::harness::TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name || '.' || column_name || ' ' || data_type FROM information_schema.columns
         WHERE table_schema = current_schema() AND (column_name IN ('session_id', 'parent_trace_id')
             OR (column_name = 'id' AND table_name IN ('flow_trace_sessions', 'flow_traces', 'flow_trace_events')))
         ORDER BY 1",
    )
    // Not prepared: the migrations change the column types under this connection.
    .persistent(false)
    .fetch_all(db.store.pool())
    .await
    .expect("columns")
}

/// Everything stored, as text, in a fixed order.
async fn contents(db: &crate::harness::TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 's ' || id::text || ' ' || start_time::text || ' ' || total_traces FROM flow_trace_sessions
         UNION ALL SELECT 't ' || id::text || ' ' || session_id::text || ' ' || COALESCE(parent_trace_id::text, '-')
             || ' ' || timestamp::text || ' ' || seq FROM flow_traces
         UNION ALL SELECT 'e ' || id::text || ' ' || session_id::text || ' ' || seq FROM flow_trace_events
         UNION ALL SELECT 'm ' || session_id::text || ' ' || node_id || ' ' || inputs || ' ' || outputs
             FROM flow_trace_node_minutes
         UNION ALL SELECT 'c ' || session_id::text || ' ' || COALESCE(status, '-') FROM flow_session_changes
         ORDER BY 1",
    )
    // Not prepared: the migrations change the column types under this connection.
    .persistent(false)
    .fetch_all(db.store.pool())
    .await
    .expect("contents")
}

/// Stops TimescaleDB's background jobs of this database from starting (none without TimescaleDB).
async fn pause_jobs(db: &crate::harness::TestDb) {
    if db.timescaledb {
        exec(db, "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs WHERE job_id >= 1000")
            .await;
    }
}

async fn exec(db: &crate::harness::TestDb, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(db.store.pool()).await.expect(sql);
}

/// In TimescaleDB mode: hypertables with compression on, their compression policy intervals and segment columns.
async fn compression(db: &crate::harness::TestDb) -> Vec<String> {
    if !db.timescaledb {
        return Vec::new();
    }
    sqlx::query_scalar(
        "SELECT h.hypertable_name::text || ' ' || h.compression_enabled || ' ' || COALESCE(j.config->>'compress_after', '-')
             || ' ' || COALESCE((SELECT string_agg(attname::text, ',' ORDER BY attname)
                 FROM timescaledb_information.compression_settings s
                 WHERE s.hypertable_name = h.hypertable_name AND segmentby_column_index IS NOT NULL), '-')
         FROM timescaledb_information.hypertables h
         LEFT JOIN timescaledb_information.jobs j
             ON j.hypertable_name = h.hypertable_name AND j.proc_name = 'policy_compression'
         ORDER BY 1",
    )
    // Not prepared: the migrations change the column types under this connection.
    .persistent(false)
    .fetch_all(db.store.pool())
    .await
    .expect("compression")
}

async fn compressed_chunks(db: &crate::harness::TestDb) -> i64 {
    count(db, "SELECT count(*) FROM timescaledb_information.chunks WHERE is_compressed").await
}

#[tokio::test]
async fn uuid_databases_move_to_text_ids_keeping_data_and_go_back() {
    uuid_to_text_ids(empty_db().await).await;
    if let Some(plain) = crate::harness::empty_db_on(crate::harness::Kind::Plain).await {
        uuid_to_text_ids(plain).await;
    }
}

async fn uuid_to_text_ids(db: crate::harness::TestDb) {
    use migration::MigratorTrait;
    migration::Migrator::up(db.store.orm(), Some(8)).await.expect("up to the uuid schema");
    let (s, t1, t2, e) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    exec(
        &db,
        &format!(
            "INSERT INTO flow_trace_sessions (id, start_time, workflow_id, workflow_name, total_traces)
                 VALUES ('{s}', now() - INTERVAL '15 days', 'wf', 'n', 2);
             INSERT INTO flow_traces (id, timestamp, seq, session_id, workflow_id, status, source_node_id, target_node_id,
                 parent_trace_id)
                 VALUES ('{t1}', now() - INTERVAL '8 days', nextval('flow_trace_seq'), '{s}', 'wf', 'SUCCESS', 'a', 'b', NULL),
                        ('{t2}', now() - INTERVAL '1 hour', nextval('flow_trace_seq'), '{s}', 'wf', 'SUCCESS', 'b', 'c', '{t1}');
             INSERT INTO flow_trace_events (id, timestamp, seq, session_id, workflow_id, node_id, event_type)
                 VALUES ('{e}', now() - INTERVAL '4 days', nextval('flow_trace_event_seq'), '{s}', 'wf', 'a', 'START');
             INSERT INTO flow_trace_node_minutes (session_id, node_id, minute, inputs, outputs)
                 VALUES ('{s}', 'a', date_trunc('minute', now() - INTERVAL '8 days'), 0, 1),
                        ('{s}', 'b', date_trunc('minute', now() - INTERVAL '8 days'), 1, 0),
                        ('{s}', 'b', date_trunc('minute', now() - INTERVAL '1 hour'), 0, 1),
                        ('{s}', 'c', date_trunc('minute', now() - INTERVAL '1 hour'), 1, 0);
             INSERT INTO flow_session_changes (session_id, workflow_id, status) VALUES ('{s}', 'wf', 'RUNNING');"
        ),
    )
    .await;
    if db.timescaledb {
        // Old chunks compressed, as the policy would have done: the migration must get through them. The policies
        // themselves are paused, or their first run races these calls on the same chunks.
        pause_jobs(&db).await;
        exec(&db, "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('flow_traces', older_than => INTERVAL '2 days') c").await;
        exec(&db, "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('flow_trace_events', older_than => INTERVAL '2 days') c")
            .await;
        exec(&db, "SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('flow_trace_sessions', older_than => INTERVAL '2 days') c")
            .await;
    }
    let before = contents(&db).await;
    let before_compression = compression(&db).await;
    if db.timescaledb {
        assert_eq!(compressed_chunks(&db).await, 3, "one old chunk of each table compressed");
    }
    assert_eq!(before.len(), 9, "{before:?}");
    assert!(id_column_types(&db).await.iter().all(|c| c.ends_with(" uuid")));

    db.store.migrate_up().await.expect("up to text ids");
    // The jobs the later migrations made would race the way down on the catalog ("tuple concurrently updated").
    pause_jobs(&db).await;
    let types = id_column_types(&db).await;
    assert_eq!(types.len(), 8, "{types:?}");
    assert!(types.iter().all(|c| c.ends_with(" text")), "{types:?}");
    assert_eq!(contents(&db).await, before, "every row and id kept");
    assert_eq!(compression(&db).await, before_compression, "compression as it was");
    if db.timescaledb {
        assert_eq!(compressed_chunks(&db).await, 3, "the chunks compressed before are compressed again");
    }
    let key: String =
        sqlx::query_scalar("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'flow_traces_pkey'")
            .fetch_one(db.store.pool())
            .await
            .expect("key");
    assert_eq!(key, "PRIMARY KEY (session_id, id, \"timestamp\")");

    // The migrated rows answer through the store with the same ids, and a retry of a stored id is a duplicate.
    let found = db.store.session(&s.to_string()).await.expect("session").expect("found");
    assert_eq!(found.id, s.to_string());
    let filter = flowtrace::store::traces::TraceFilter { session_id: Some(s.to_string()), ..Default::default() };
    let page = flowtrace::store::cursor::Page { after: None, before: None, limit: 10, from_end: false };
    let traces = db.store.traces(&filter, &page).await.expect("traces").rows;
    assert_eq!(traces.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), vec![t1.to_string(), t2.to_string()]);
    assert_eq!(traces[1].parent_trace_id, Some(t1.to_string()));

    let after_uuid_ids = <migration::Migrator as migration::MigratorTrait>::migrations().len() as u32 - 8;
    db.store.migrate_down(Some(after_uuid_ids)).await.expect("down to uuid ids");
    assert!(id_column_types(&db).await.iter().all(|c| c.ends_with(" uuid")));
    assert_eq!(contents(&db).await, before, "back with every row and id");
    assert_eq!(compression(&db).await, before_compression);
    if db.timescaledb {
        assert_eq!(compressed_chunks(&db).await, 3);
    }

    // With an id that is no UUID, going back is refused and changes nothing.
    db.store.migrate_up().await.expect("up again");
    pause_jobs(&db).await;
    db.store.migrate_down(Some(after_uuid_ids - 1)).await.expect("down to the text ids migration");
    exec(
        &db,
        "INSERT INTO flow_trace_sessions (id, start_time, workflow_id, workflow_name)
             VALUES ('fts_mf3k2q1a_4h8z0c9xk2lq', now(), 'wf', 'n')",
    )
    .await;
    let refused = db.store.migrate_down(Some(1)).await.expect_err("refused");
    let message = refused.to_string();
    assert!(message.contains("1 ids are not UUIDs") && message.contains("flow_trace_sessions.id: 1"), "{message}");
    assert!(id_column_types(&db).await.iter().all(|c| c.ends_with(" text")));
    assert_eq!(contents(&db).await.len(), before.len() + 1);
    let status = db.store.migration_status().await.expect("status");
    assert!(status.iter().take(9).all(|(_, applied)| *applied), "{status:?}");
}

const HISTOGRAMS: &str = "SELECT count(*) FROM pg_class WHERE relkind IN ('v', 'm')
    AND relnamespace = 'public'::regnamespace
    AND relname IN ('edge_duration_histograms_hourly', 'session_duration_histograms_hourly')";
const PLAIN_AGGREGATE: &str =
    "SELECT count(*) FROM pg_proc WHERE proname IN ('flowtrace_histogram', 'flowtrace_histogram_step')";
const REFRESH_JOBS: &str =
    "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'";

/// The duration histograms come with their migration and go with its `down` (with the caller scope's views, which
/// show them), leaving the other aggregates and their refresh policies and (in plain mode) no histogram aggregate
/// behind; in both modes.
#[tokio::test]
async fn duration_histograms_come_and_go_with_their_migration_in_both_modes() {
    let mut dbs = vec![empty_db().await];
    dbs.extend(crate::harness::empty_db_on(crate::harness::Kind::Plain).await);
    for db in dbs {
        db.store.migrate_up().await.expect("up");
        let timescaledb = db.store.mode().await.expect("mode").is_timescaledb();
        assert_eq!(count(&db, HISTOGRAMS).await, 2);
        // Down past every migration after the histograms, and the histograms.
        let past_histograms = <migration::Migrator as migration::MigratorTrait>::migrations().len() as u32 - 11;
        db.store.migrate_down(Some(past_histograms)).await.expect("down past the histograms");
        assert_eq!((count(&db, HISTOGRAMS).await, count(&db, VIEWS).await), (0, 4));
        assert_eq!(count(&db, PLAIN_AGGREGATE).await, 0);
        if timescaledb {
            assert_eq!(count(&db, REFRESH_JOBS).await, 3, "the other aggregates keep their refresh policies");
        }
        db.store.migrate_up().await.expect("up again");
        assert_eq!(count(&db, HISTOGRAMS).await, 2);
        assert_eq!(count(&db, PLAIN_AGGREGATE).await, if timescaledb { 0 } else { 2 });
        if timescaledb {
            assert_eq!(count(&db, REFRESH_JOBS).await, 5, "the histograms have refresh policies of their own");
        }
        db.store.migrate_down(None).await.expect("down");
        assert_eq!((count(&db, VIEWS).await, count(&db, PLAIN_AGGREGATE).await), (0, 0));
    }
}
