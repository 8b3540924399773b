//! Chunk intervals, compression, retention and aggregate refresh: configuration with DESIGN §2's defaults.
//!
//! `apply` is the one place that changes them. It compares each job's current configuration with the wanted one and
//! only replaces what differs, so running it at every start (or from `flowtrace policies apply`) is idempotent.
//! Intervals are PostgreSQL interval text (`'7 days'`, `'30 minutes'`) and reach SQL only as bound parameters.

use sea_orm_migration::sea_orm::{ConnectionTrait, DbErr, Statement, Value};

/// Storage policy of one hypertable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePolicy {
    pub table: &'static str,
    pub chunk_interval: String,
    pub compress_after: String,
    pub retain_for: String,
    pub segment_by: &'static str,
    pub order_by: &'static str,
}

/// Refresh policy of one continuous aggregate. `start_offset` must stay inside the source's retention, so the
/// aggregate keeps history that the raw data no longer has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshPolicy {
    pub view: &'static str,
    pub source: &'static str,
    pub start_offset: String,
    pub end_offset: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies {
    pub tables: Vec<TablePolicy>,
    pub aggregates: Vec<RefreshPolicy>,
    pub refresh_every: String,
}

impl Default for Policies {
    fn default() -> Self {
        let table = |table, chunk: &str, compress: &str, retain: &str, segment_by, order_by| TablePolicy {
            table,
            chunk_interval: chunk.into(),
            compress_after: compress.into(),
            retain_for: retain.into(),
            segment_by,
            order_by,
        };
        let refresh = |view, source, start: &str, end: &str| RefreshPolicy {
            view,
            source,
            start_offset: start.into(),
            end_offset: end.into(),
        };
        Policies {
            tables: vec![
                table("flow_trace_sessions", "7 days", "14 days", "90 days", "workflow_id", "start_time DESC"),
                table("flow_traces", "1 day", "7 days", "30 days", "session_id", "timestamp DESC, seq DESC"),
                table("flow_trace_events", "1 day", "3 days", "7 days", "session_id", "timestamp DESC"),
            ],
            aggregates: vec![
                refresh("session_stats_hourly", "flow_trace_sessions", "7 days", "1 hour"),
                refresh("session_stats_daily", "flow_trace_sessions", "30 days", "1 day"),
                refresh("edge_stats_hourly", "flow_traces", "7 days", "1 hour"),
                refresh("edge_duration_histograms_hourly", "flow_traces", "7 days", "1 hour"),
                refresh("session_duration_histograms_hourly", "flow_trace_sessions", "7 days", "1 hour"),
            ],
            refresh_every: "30 minutes".into(),
        }
    }
}

impl Policies {
    pub fn table(&self, name: &str) -> Option<&TablePolicy> {
        self.tables.iter().find(|t| t.table == name)
    }

    pub fn table_mut(&mut self, name: &str) -> Option<&mut TablePolicy> {
        self.tables.iter_mut().find(|t| t.table == name)
    }

    /// Checks every interval with PostgreSQL itself and that refresh windows stay inside raw retention.
    pub async fn validate(&self, conn: &impl ConnectionTrait) -> Result<(), DbErr> {
        let mut intervals: Vec<&str> = vec![&self.refresh_every];
        for t in &self.tables {
            intervals.extend([t.chunk_interval.as_str(), &t.compress_after, &t.retain_for]);
        }
        for a in &self.aggregates {
            intervals.extend([a.start_offset.as_str(), &a.end_offset]);
        }
        for text in intervals {
            let ok = scalar_bool(conn, "SELECT $1::interval > INTERVAL '0'", vec![text.into()]).await;
            if !matches!(ok, Ok(true)) {
                return Err(DbErr::Custom(format!("'{text}' is not a positive PostgreSQL interval")));
            }
        }
        for a in &self.aggregates {
            let Some(source) = self.table(a.source) else {
                continue;
            };
            let inside = scalar_bool(
                conn,
                "SELECT $1::interval <= $2::interval",
                vec![a.start_offset.clone().into(), source.retain_for.clone().into()],
            )
            .await?;
            if !inside {
                return Err(DbErr::Custom(format!(
                    "{}: refresh window {} reaches past {} retention of {}",
                    a.view, a.start_offset, a.source, source.retain_for
                )));
            }
        }
        Ok(())
    }

    /// Makes the database's TimescaleDB jobs match these policies; returns what changed. No-op in plain mode.
    pub async fn apply(&self, conn: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
        self.validate(conn).await?;
        let mut changed = Vec::new();
        if !crate::mode::timescaledb_created(conn).await? {
            return Ok(changed);
        }
        for t in &self.tables {
            self.apply_table(conn, t, &mut changed).await?;
        }
        for a in &self.aggregates {
            // On a new database migration 5 runs before the aggregates of later migrations exist; those migrations
            // apply the policies again once they have created them.
            if !scalar_bool(conn, "SELECT to_regclass($1) IS NOT NULL", vec![a.view.into()]).await? {
                continue;
            }
            let current = job_matches(
                conn,
                // For aggregate policies the jobs view names the aggregate itself as the hypertable.
                "SELECT (config->>'start_offset')::interval = $2::interval
                        AND (config->>'end_offset')::interval = $3::interval
                        AND schedule_interval = $4::interval
                 FROM timescaledb_information.jobs
                 WHERE proc_name = 'policy_refresh_continuous_aggregate' AND hypertable_name = $1",
                vec![
                    a.view.into(),
                    a.start_offset.clone().into(),
                    a.end_offset.clone().into(),
                    self.refresh_every.clone().into(),
                ],
            )
            .await?;
            if current != Some(true) {
                exec(
                    conn,
                    "SELECT remove_continuous_aggregate_policy($1::regclass, if_exists => true)",
                    vec![a.view.into()],
                )
                .await?;
                exec(
                    conn,
                    "SELECT add_continuous_aggregate_policy($1::regclass, start_offset => $2::interval,
                        end_offset => $3::interval, schedule_interval => $4::interval)",
                    vec![
                        a.view.into(),
                        a.start_offset.clone().into(),
                        a.end_offset.clone().into(),
                        self.refresh_every.clone().into(),
                    ],
                )
                .await?;
                changed.push(format!(
                    "{}: refresh every {} over [now - {}, now - {}]",
                    a.view, self.refresh_every, a.start_offset, a.end_offset
                ));
            }
        }
        Ok(changed)
    }

    async fn apply_table(
        &self,
        conn: &impl ConnectionTrait,
        t: &TablePolicy,
        changed: &mut Vec<String>,
    ) -> Result<(), DbErr> {
        let chunk_same = scalar_bool(
            conn,
            "SELECT d.time_interval = $2::interval FROM timescaledb_information.dimensions d
             WHERE d.hypertable_name = $1 AND d.dimension_number = 1",
            vec![t.table.into(), t.chunk_interval.clone().into()],
        )
        .await?;
        if !chunk_same {
            exec(
                conn,
                "SELECT set_chunk_time_interval($1::regclass, $2::interval)",
                vec![t.table.into(), t.chunk_interval.clone().into()],
            )
            .await?;
            changed.push(format!("{}: new chunks span {}", t.table, t.chunk_interval));
        }
        let compression_on = scalar_bool(
            conn,
            "SELECT compression_enabled FROM timescaledb_information.hypertables WHERE hypertable_name = $1",
            vec![t.table.into()],
        )
        .await?;
        if !compression_on {
            // Table and column names are ours (constants above), never a client's. TimescaleDB warns that `id`, part
            // of the primary key, is neither a segment-by nor an order-by column: ids are opaque client text, so
            // ordering by them would only add per-batch min/max metadata that excludes nothing. The notice is
            // silenced for this statement alone, on purpose.
            conn.execute_unprepared(&format!(
                "SET client_min_messages = error; \
                 ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = '{}', \
                 timescaledb.compress_orderby = '{}'); \
                 RESET client_min_messages",
                t.table, t.segment_by, t.order_by
            ))
            .await?;
            changed.push(format!("{}: compression on (segment by {}, order by {})", t.table, t.segment_by, t.order_by));
        }
        for (proc_name, key, remove, add, wanted, what) in [
            (
                "policy_compression",
                "compress_after",
                "remove_compression_policy",
                "add_compression_policy",
                &t.compress_after,
                "compress after",
            ),
            (
                "policy_retention",
                "drop_after",
                "remove_retention_policy",
                "add_retention_policy",
                &t.retain_for,
                "drop after",
            ),
        ] {
            let current = job_matches(
                conn,
                &format!(
                    "SELECT (config->>'{key}')::interval = $2::interval FROM timescaledb_information.jobs
                     WHERE proc_name = '{proc_name}' AND hypertable_name = $1"
                ),
                vec![t.table.into(), wanted.clone().into()],
            )
            .await?;
            if current != Some(true) {
                exec(conn, &format!("SELECT {remove}($1::regclass, if_exists => true)"), vec![t.table.into()]).await?;
                exec(
                    conn,
                    &format!("SELECT {add}($1::regclass, $2::interval)"),
                    vec![t.table.into(), wanted.clone().into()],
                )
                .await?;
                changed.push(format!("{}: {what} {wanted}", t.table));
            }
        }
        Ok(())
    }
}

async fn exec(conn: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<(), DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(conn.get_database_backend(), sql, values)).await.map(|_| ())
}

/// `None` when no such job exists.
async fn job_matches(conn: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<Option<bool>, DbErr> {
    let row = conn.query_one_raw(Statement::from_sql_and_values(conn.get_database_backend(), sql, values)).await?;
    row.map(|r| r.try_get_by_index::<Option<bool>>(0).map(|v| v.unwrap_or(false))).transpose()
}

async fn scalar_bool(conn: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Result<bool, DbErr> {
    Ok(job_matches(conn, sql, values).await?.unwrap_or(false))
}
