//! Ids of sessions, traces and events become text: clients bring their own (`fts_…`, `ft_…`), not only UUIDs.
//!
//! Every id column (`flow_trace_sessions.id`, `flow_traces.id/session_id/parent_trace_id`,
//! `flow_trace_events.id/session_id`, `flow_trace_node_minutes.session_id`, `flow_session_changes.session_id`) becomes
//! `text COLLATE "C"`: ids are opaque, so they compare byte by byte, which is also the fastest comparison. Existing
//! UUIDs keep their canonical text form.
//!
//! The keys of traces and events become `(session_id, id, timestamp)`: ingest stores an id at most once per session
//! whatever its timestamp, and checks that by this key's prefix. (TimescaleDB requires the partitioning column in every
//! unique index, so the key alone cannot say "once per session"; ingest's per-workflow lock makes the check safe.)
//!
//! TimescaleDB cannot change a column of a hypertable with compression enabled: compression is switched off (its
//! policy removed, chunks decompressed) around the change and switched on again with the same settings and the same
//! `compress_after`, and the chunks that were compressed are compressed again. The continuous aggregates read no id
//! column and stay as they are.
//!
//! `down` goes back to uuid columns when every id is a UUID in canonical form, and refuses otherwise, saying how many
//! are not.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};

use crate::policies::Policies;
use crate::{mode, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Every id column, by table.
const ID_COLUMNS: &[(&str, &[&str])] = &[
    ("flow_trace_sessions", &["id"]),
    ("flow_traces", &["id", "session_id", "parent_trace_id"]),
    ("flow_trace_events", &["id", "session_id"]),
    ("flow_trace_node_minutes", &["session_id"]),
    ("flow_session_changes", &["session_id"]),
];

/// The tables whose key changes, with the key before and after.
const KEYS: &[(&str, &str, &str)] = &[
    ("flow_traces", "id, timestamp", "session_id, id, timestamp"),
    ("flow_trace_events", "id, timestamp", "session_id, id, timestamp"),
];

/// What PostgreSQL prints for a uuid: only ids of this form go back to uuid columns unchanged.
const CANONICAL_UUID: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// The statements that change every id column to text (or back to uuid) and the keys with them.
fn change_statements(to_text: bool) -> Vec<String> {
    let (to, using) = if to_text { ("text COLLATE \"C\"", "::text") } else { ("uuid", "::uuid") };
    let mut statements = Vec::new();
    for (table, columns) in ID_COLUMNS {
        let alters: Vec<String> =
            columns.iter().map(|c| format!("ALTER COLUMN {c} TYPE {to} USING {c}{using}")).collect();
        statements.push(format!("ALTER TABLE {table} {}", alters.join(", ")));
    }
    for (table, before, after) in KEYS {
        let key = if to_text { after } else { before };
        statements.push(format!(
            "ALTER TABLE {table} DROP CONSTRAINT {table}_pkey, ADD CONSTRAINT {table}_pkey PRIMARY KEY ({key})"
        ));
    }
    statements
}

/// Compression of one hypertable as found before the change, to be restored after it.
struct Compression {
    table: &'static str,
    enabled: bool,
    compress_after: Option<String>,
    /// Chunks that were compressed, as `schema.name`.
    chunks: Vec<String>,
}

async fn text_of(conn: &impl ConnectionTrait, sql: &str, table: &str) -> Result<Option<String>, DbErr> {
    let row =
        conn.query_one_raw(Statement::from_sql_and_values(conn.get_database_backend(), sql, [table.into()])).await?;
    match row {
        Some(row) => row.try_get_by_index::<Option<String>>(0),
        None => Ok(None),
    }
}

/// Switches compression off on every hypertable; returns what to restore.
async fn suspend_compression(conn: &impl ConnectionTrait) -> Result<Vec<Compression>, DbErr> {
    let mut saved = Vec::new();
    for t in Policies::default().tables {
        let enabled = text_of(
            conn,
            "SELECT compression_enabled::text FROM timescaledb_information.hypertables WHERE hypertable_name = $1",
            t.table,
        )
        .await?
        .as_deref()
            == Some("true");
        let compress_after = text_of(
            conn,
            "SELECT config->>'compress_after' FROM timescaledb_information.jobs
             WHERE proc_name = 'policy_compression' AND hypertable_name = $1",
            t.table,
        )
        .await?;
        let rows = conn
            .query_all_raw(Statement::from_sql_and_values(
                conn.get_database_backend(),
                "SELECT format('%I.%I', chunk_schema, chunk_name) FROM timescaledb_information.chunks
                 WHERE hypertable_name = $1 AND is_compressed",
                [t.table.into()],
            ))
            .await?;
        let chunks = rows.iter().map(|r| r.try_get_by_index::<String>(0)).collect::<Result<Vec<_>, _>>()?;
        // Table names are ours (constants), never a client's.
        let mut statements = vec![
            format!("SELECT remove_compression_policy('{}', if_exists => true)", t.table),
            format!("SELECT decompress_chunk(c, if_compressed => true) FROM show_chunks('{}') c", t.table),
        ];
        if enabled {
            statements.push(format!("ALTER TABLE {} SET (timescaledb.compress = false)", t.table));
        }
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        for sql in statements {
            conn.execute_unprepared(sql).await?;
        }
        saved.push(Compression { table: t.table, enabled, compress_after, chunks });
    }
    Ok(saved)
}

async fn restore_compression(conn: &impl ConnectionTrait, saved: Vec<Compression>) -> Result<(), DbErr> {
    let policies = Policies::default();
    for c in saved {
        let Some(t) = policies.table(c.table) else { continue };
        if c.enabled {
            conn.execute_unprepared(&format!(
                "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = '{}', \
                 timescaledb.compress_orderby = '{}')",
                t.table, t.segment_by, t.order_by
            ))
            .await?;
        }
        if let Some(after) = c.compress_after {
            conn.execute_raw(Statement::from_sql_and_values(
                conn.get_database_backend(),
                "SELECT add_compression_policy($1::regclass, $2::interval)",
                [t.table.into(), after.into()],
            ))
            .await?;
        }
        for chunk in c.chunks {
            conn.execute_raw(Statement::from_sql_and_values(
                conn.get_database_backend(),
                "SELECT compress_chunk($1::regclass, if_not_compressed => true)",
                [chunk.into()],
            ))
            .await?;
        }
    }
    Ok(())
}

/// Runs `statements` with compression suspended around them on TimescaleDB.
async fn change(manager: &SchemaManager<'_>, statements: Vec<String>) -> Result<(), DbErr> {
    let conn = manager.get_connection();
    let timescaledb = mode::timescaledb_created(conn).await?;
    let saved = if timescaledb { suspend_compression(conn).await? } else { Vec::new() };
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    run_all(manager, &statements).await?;
    if timescaledb {
        restore_compression(conn, saved).await?;
    }
    Ok(())
}

/// How many ids are not canonical UUIDs, per column (only columns that have any).
async fn non_uuid_ids(conn: &impl ConnectionTrait) -> Result<Vec<(String, i64)>, DbErr> {
    let mut found = Vec::new();
    for (table, columns) in ID_COLUMNS {
        for column in *columns {
            let sql = format!("SELECT count(*) FROM {table} WHERE {column} !~ '{CANONICAL_UUID}'");
            let row = conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql)).await?;
            let n = match row {
                Some(row) => row.try_get_by_index::<i64>(0)?,
                None => 0,
            };
            if n > 0 {
                found.push((format!("{table}.{column}"), n));
            }
        }
    }
    Ok(found)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        change(manager, change_statements(true)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let found = non_uuid_ids(manager.get_connection()).await?;
        if !found.is_empty() {
            let total: i64 = found.iter().map(|(_, n)| n).sum();
            let detail: Vec<String> = found.iter().map(|(column, n)| format!("{column}: {n}")).collect();
            return Err(DbErr::Migration(format!(
                "cannot go back to uuid ids: {total} ids are not UUIDs ({}); delete or export those rows first",
                detail.join(", ")
            )));
        }
        change(manager, change_statements(false)).await
    }
}
