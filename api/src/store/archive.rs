//! Reads behind `flowtrace export`: a table's columns as the catalog has them, the time span of its rows in a window,
//! its rows of one window streamed in time order, and where the next retention run cuts.

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt as _};
use migration::Policies;
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::{Store, StoreResult};

/// A table export archives, with the column it is partitioned (and expires) on and a total order of its rows.
#[derive(Clone, Copy, Debug)]
pub struct ArchiveTable {
    pub name: &'static str,
    pub time_column: &'static str,
    order_by: &'static str,
}

pub const ARCHIVE_TABLES: [ArchiveTable; 3] = [
    ArchiveTable { name: "flow_trace_sessions", time_column: "start_time", order_by: "start_time, id" },
    ArchiveTable { name: "flow_traces", time_column: "timestamp", order_by: "timestamp, seq" },
    ArchiveTable { name: "flow_trace_events", time_column: "timestamp", order_by: "timestamp, seq" },
];

/// How a column is read and written. Ids (uuid or text), text and anything unknown are read as text; jsonb as its
/// text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Json,
    Timestamp,
    Int64,
    Int32,
    Float64,
    Bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveColumn {
    pub name: String,
    pub kind: ColumnKind,
    pub nullable: bool,
}

/// One value of a row; timestamps as microseconds since the Unix epoch (UTC).
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Micros(i64),
    Int64(i64),
    Int32(i32),
    Float64(f64),
    Bool(bool),
}

impl Store {
    /// The columns of `table` in their order, as the catalog describes them now (whatever migrations ran).
    pub async fn archive_columns(&self, table: &str) -> StoreResult<Vec<ArchiveColumn>> {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_nullable = 'YES' FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, data_type, nullable)| {
                let kind = match data_type.as_str() {
                    "timestamp with time zone" => ColumnKind::Timestamp,
                    "bigint" => ColumnKind::Int64,
                    "integer" | "smallint" => ColumnKind::Int32,
                    "double precision" | "real" => ColumnKind::Float64,
                    "boolean" => ColumnKind::Bool,
                    "jsonb" | "json" => ColumnKind::Json,
                    _ => ColumnKind::Text,
                };
                ArchiveColumn { name, kind, nullable }
            })
            .collect())
    }

    /// The first and last time of `table`'s rows in `[from, to)` (open ends when `None`); `None` when there are none.
    pub async fn archive_span(
        &self,
        table: &ArchiveTable,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> StoreResult<Option<(DateTime<Utc>, DateTime<Utc>)>> {
        let t = table.time_column;
        // Table and column names are ours (ARCHIVE_TABLES); the bounds are bound.
        let sql = format!(
            "SELECT min({t}), max({t}) FROM {} WHERE {t} >= COALESCE($1, '-infinity') AND {t} < COALESCE($2, 'infinity')",
            table.name
        );
        let (min, max): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(from).bind(to).fetch_one(&self.pool).await?;
        Ok(min.zip(max))
    }

    /// The rows of `table` in `[from, to)`, in time order, streamed: memory stays bounded whatever the window holds.
    pub fn archive_rows<'a>(
        &'a self,
        table: &ArchiveTable,
        columns: &'a [ArchiveColumn],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Stream<Item = StoreResult<Vec<Cell>>> + Send + use<'a> {
        let select: Vec<String> = columns
            .iter()
            .map(|c| {
                let name = format!("\"{}\"", c.name.replace('"', "\"\""));
                match c.kind {
                    ColumnKind::Text | ColumnKind::Json => format!("{name}::text"),
                    ColumnKind::Int32 => format!("{name}::int4"),
                    ColumnKind::Float64 => format!("{name}::float8"),
                    _ => name,
                }
            })
            .collect();
        let t = table.time_column;
        let sql = format!(
            "SELECT {} FROM {} WHERE {t} >= $1 AND {t} < $2 ORDER BY {}",
            select.join(", "),
            table.name,
            table.order_by
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(to)
            .fetch(&self.pool)
            .map(move |row| decode(&row?, columns))
    }

    /// Whether `table` has rows in `[from, to)` that are still open: sessions still running change later.
    pub async fn archive_open_rows(
        &self,
        table: &ArchiveTable,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<bool> {
        if table.name != "flow_trace_sessions" {
            return Ok(false);
        }
        let open: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM flow_trace_sessions
                            WHERE start_time >= $1 AND start_time < $2 AND status = 'RUNNING')",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        Ok(open)
    }

    pub async fn interval_is_positive(&self, text: &str) -> StoreResult<bool> {
        let positive = sqlx::query_scalar("SELECT $1::interval > INTERVAL '0'").bind(text).fetch_one(&self.pool).await;
        Ok(matches!(positive, Ok(true)))
    }

    /// The database's clock: windows and cutoffs are all taken from it.
    pub async fn now(&self) -> StoreResult<DateTime<Utc>> {
        Ok(sqlx::query_scalar("SELECT now()").fetch_one(&self.pool).await?)
    }

    /// Where the next retention run of `table` cuts, if it ran now: it drops exactly the rows older than this.
    /// `retain_for` overrides the retention in force. Plain mode deletes rows older than now − retention, traces by
    /// whole minutes (the server's own job, configured by `policies`); TimescaleDB drops whole chunks that end by
    /// then, with the interval of the database's retention job. `None`: nothing would be dropped.
    pub async fn retention_cutoff(
        &self,
        table: &ArchiveTable,
        policies: &Policies,
        retain_for: Option<&str>,
        timescaledb: bool,
    ) -> StoreResult<Option<DateTime<Utc>>> {
        let interval = match (retain_for, timescaledb) {
            (Some(v), _) => Some(v.to_owned()),
            (None, false) => policies.table(table.name).map(|p| p.retain_for.clone()),
            (None, true) => {
                sqlx::query_scalar(
                    "SELECT (config->>'drop_after')::text FROM timescaledb_information.jobs
                     WHERE proc_name = 'policy_retention' AND hypertable_name = $1",
                )
                .bind(table.name)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        let Some(interval) = interval else {
            return Ok(None);
        };
        let cutoff: Option<DateTime<Utc>> = if timescaledb {
            sqlx::query_scalar(
                "SELECT max(range_end) FROM timescaledb_information.chunks
                 WHERE hypertable_name = $1 AND range_end <= now() - $2::interval",
            )
            .bind(table.name)
            .bind(&interval)
            .fetch_one(&self.pool)
            .await?
        } else {
            let cut = super::retention::plain_cut(table.name);
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {cut}")))
                .bind(&interval)
                .fetch_one(&self.pool)
                .await?
        };
        Ok(cutoff)
    }
}

fn decode(row: &PgRow, columns: &[ArchiveColumn]) -> StoreResult<Vec<Cell>> {
    let mut cells = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let cell = match c.kind {
            ColumnKind::Text | ColumnKind::Json => row.try_get::<Option<String>, _>(i)?.map(Cell::Text),
            ColumnKind::Timestamp => {
                row.try_get::<Option<DateTime<Utc>>, _>(i)?.map(|t| Cell::Micros(t.timestamp_micros()))
            }
            ColumnKind::Int64 => row.try_get::<Option<i64>, _>(i)?.map(Cell::Int64),
            ColumnKind::Int32 => row.try_get::<Option<i32>, _>(i)?.map(Cell::Int32),
            ColumnKind::Float64 => row.try_get::<Option<f64>, _>(i)?.map(Cell::Float64),
            ColumnKind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Cell::Bool),
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(cells)
}
