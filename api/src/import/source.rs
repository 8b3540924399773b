//! The source database: which layout it has, and the `COPY (SELECT …) TO STDOUT` queries that read it in the column
//! order of the staging tables (`store::import`), already converted to our forms (text ids, uppercase statuses,
//! `timestamptz`, JSON as text).
//!
//! `COPY` takes no bound parameters, so the few values in these queries are written in as literals: table and column
//! names come from the lists below (never from the source), times are formatted by us, and the time zone has been
//! checked by the source itself before it is quoted.

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// What a staged column holds, which decides how the source's column is converted and how a row is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An id of a session, trace or event (the id rule).
    Id,
    /// An optional id (a parent trace).
    OptId,
    /// A required id or name (node, workflow): bounded, not blank.
    Name,
    /// An optional id or name.
    OptName,
    /// Free text (preview, error message, stack).
    Text,
    Time,
    OptTime,
    /// One of the given uppercase values.
    Status(&'static [&'static str]),
    Json,
    /// Milliseconds, finite and >= 0.
    Duration,
    /// A count (bytes, depth), >= 0.
    Count,
}

/// One staged column: our name, what it holds, and the source's column for each layout.
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    /// The column in the replaced service's main-database tables (camelCase).
    camel: &'static str,
}

const SESSION_STATUSES: &[&str] = &["RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
const TRACE_STATUSES: &[&str] = &["SUCCESS", "ERROR", "WARNING"];
const EVENT_TYPES: &[&str] = &["INPUT", "OUTPUT", "ERROR", "LOG", "START", "COMPLETE"];

const fn col(name: &'static str, kind: Kind, camel: &'static str) -> Column {
    Column { name, kind, camel }
}

pub const SESSIONS: &[Column] = &[
    col("id", Kind::Id, "id"),
    col("workflow_id", Kind::Name, "workflowId"),
    col("workflow_version_id", Kind::OptName, "workflowVersionId"),
    col("workflow_name", Kind::Name, "workflowName"),
    col("user_id", Kind::OptName, "userId"),
    col("start_time", Kind::Time, "startTime"),
    col("end_time", Kind::OptTime, "endTime"),
    col("status", Kind::Status(SESSION_STATUSES), "status"),
    col("metadata", Kind::Json, "metadata"),
    col("created_at", Kind::OptTime, "createdAt"),
    col("updated_at", Kind::OptTime, "updatedAt"),
];

pub const TRACES: &[Column] = &[
    col("id", Kind::Id, "id"),
    col("session_id", Kind::Id, "sessionId"),
    col("timestamp", Kind::Time, "timestamp"),
    col("duration", Kind::Duration, "duration"),
    col("status", Kind::Status(TRACE_STATUSES), "status"),
    col("source_node_id", Kind::Name, "sourceNodeId"),
    col("source_node_name", Kind::OptName, "sourceNodeName"),
    col("source_node_type", Kind::OptName, "sourceNodeType"),
    col("source_port_id", Kind::OptName, "sourcePortId"),
    col("source_port_name", Kind::OptName, "sourcePortName"),
    col("source_port_type", Kind::OptName, "sourcePortType"),
    col("target_node_id", Kind::Name, "targetNodeId"),
    col("target_node_name", Kind::OptName, "targetNodeName"),
    col("target_node_type", Kind::OptName, "targetNodeType"),
    col("target_port_id", Kind::OptName, "targetPortId"),
    col("target_port_name", Kind::OptName, "targetPortName"),
    col("target_port_type", Kind::OptName, "targetPortType"),
    col("data_payload", Kind::Json, "dataPayload"),
    col("data_size", Kind::Count, "dataSize"),
    col("data_type", Kind::OptName, "dataType"),
    col("data_preview", Kind::Text, "dataPreview"),
    col("error_message", Kind::Text, "errorMessage"),
    col("error_code", Kind::OptName, "errorCode"),
    col("error_stack", Kind::Text, "errorStack"),
    col("graph_id", Kind::OptName, "graphId"),
    col("graph_name", Kind::OptName, "graphName"),
    col("parent_trace_id", Kind::OptId, "parentTraceId"),
    col("depth", Kind::Count, "depth"),
];

pub const EVENTS: &[Column] = &[
    col("id", Kind::Id, "id"),
    col("session_id", Kind::Id, "sessionId"),
    col("timestamp", Kind::Time, "timestamp"),
    col("node_id", Kind::Name, "nodeId"),
    col("port_id", Kind::OptName, "portId"),
    col("event_type", Kind::Status(EVENT_TYPES), "eventType"),
    col("data", Kind::Json, "data"),
    col("duration", Kind::Duration, "duration"),
    col("metadata", Kind::Json, "metadata"),
];

impl Kind {
    /// Whether a row needs a value here. Columns that may be NULL may also be missing from a source (added by later
    /// migrations of the replaced service, or absent from its other layout).
    pub fn required(self) -> bool {
        matches!(self, Kind::Id | Kind::Name | Kind::Time | Kind::Status(_))
    }
}

/// The three layouts `flowtrace import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The replaced service's tables in its main PostgreSQL: quoted camelCase columns, no events table.
    ReplacedMain,
    /// The replaced service's TimescaleDB schema: snake_case columns, `flow_trace_events`.
    ReplacedTimescale,
    /// Another flowtrace database (either mode).
    Flowtrace,
}

/// A detected source: its layout, the columns each table has (name → SQL type), and how to describe it.
pub struct Source {
    pub layout: Layout,
    pub description: String,
    tables: HashMap<&'static str, HashMap<String, String>>,
    /// The time zone of `timestamp without time zone` columns, quoted as a literal.
    zone: String,
}

pub const TABLES: [&str; 3] = ["flow_trace_sessions", "flow_traces", "flow_trace_events"];

/// The columns of `table` as the connection's search path finds it; empty when there is no such table.
async fn columns(conn: &mut PgConnection, table: &str) -> anyhow::Result<HashMap<String, String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

impl Source {
    /// Looks at the source's tables and says which layout they are; `zone` is checked by the source.
    pub async fn detect(conn: &mut PgConnection, zone: &str) -> anyhow::Result<Source> {
        sqlx::query("SELECT now() AT TIME ZONE $1")
            .bind(zone)
            .execute(&mut *conn)
            .await
            .with_context(|| format!("--source-timezone {zone:?} is not a time zone the source knows"))?;
        let mut tables = HashMap::new();
        for table in TABLES {
            tables.insert(table, columns(conn, table).await?);
        }
        let (flowtrace, timescaledb): (bool, bool) = sqlx::query_as(
            "SELECT to_regclass('seaql_migrations') IS NOT NULL AND to_regclass('flow_trace_node_minutes') IS NOT NULL,
                 EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
        )
        .fetch_one(&mut *conn)
        .await?;
        let traces = &tables["flow_traces"];
        let (layout, description) = if tables["flow_trace_sessions"].is_empty() || traces.is_empty() {
            bail!("the source has no flow_trace_sessions and flow_traces tables (looked in its search_path)");
        } else if flowtrace {
            let mode = if timescaledb { "TimescaleDB mode" } else { "plain PostgreSQL mode" };
            (Layout::Flowtrace, format!("another flowtrace database ({mode})"))
        } else if traces.contains_key("sessionId") {
            (
                Layout::ReplacedMain,
                "the replaced service's tables in its main PostgreSQL (camelCase columns)".to_owned(),
            )
        } else if traces.contains_key("session_id") {
            (Layout::ReplacedTimescale, "the replaced service's TimescaleDB schema (snake_case columns)".to_owned())
        } else {
            bail!("flow_traces at the source has neither \"sessionId\" nor session_id: not a layout flowtrace knows");
        };
        let source = Source { layout, description, tables, zone: format!("'{}'", zone.replace('\'', "''")) };
        let mut needed = vec![("flow_trace_sessions", SESSIONS), ("flow_traces", TRACES)];
        if source.has_events() {
            needed.push(("flow_trace_events", EVENTS));
        }
        for (table, columns) in needed {
            for c in columns {
                if source.column(table, c).is_none() && c.kind.required() {
                    bail!("{table} at the source lacks the column {}", source.source_name(c));
                }
            }
        }
        Ok(source)
    }

    pub fn has_events(&self) -> bool {
        self.layout != Layout::ReplacedMain && !self.tables["flow_trace_events"].is_empty()
    }

    /// The source's name for a column (for messages).
    pub fn source_name(&self, c: &Column) -> &'static str {
        if self.layout == Layout::ReplacedMain { c.camel } else { c.name }
    }

    /// The source's column and its SQL type, when it has it.
    fn column(&self, table: &str, c: &Column) -> Option<(String, &str)> {
        let name = self.source_name(c);
        let ty = self.tables.get(table)?.get(name)?;
        Some((format!("\"{name}\""), ty.as_str()))
    }

    /// The source's start column of sessions converted to `timestamptz`.
    fn start_time(&self) -> String {
        self.expr("flow_trace_sessions", &SESSIONS[5], "s.")
    }

    /// One column of the select list in our form; NULL when the source lacks it.
    fn expr(&self, table: &str, c: &Column, alias: &str) -> String {
        let Some((name, ty)) = self.column(table, c) else {
            return "NULL".into();
        };
        let name = format!("{alias}{name}");
        match c.kind {
            Kind::Time | Kind::OptTime if ty == "timestamp without time zone" => {
                format!("({name} AT TIME ZONE {})", self.zone)
            }
            Kind::Time | Kind::OptTime => format!("{name}::timestamptz"),
            Kind::Status(_) => format!("upper({name}::text)"),
            Kind::Duration => format!("{name}::float8"),
            Kind::Count => format!("{name}::int8"),
            Kind::Id | Kind::OptId | Kind::Name | Kind::OptName | Kind::Text | Kind::Json => format!("{name}::text"),
        }
    }

    /// The sessions of the window, oldest first.
    fn window(&self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> String {
        let start = self.start_time();
        let mut sql = format!("{start} IS NOT NULL");
        for (bound, op) in [(since, ">="), (until, "<")] {
            if let Some(at) = bound {
                sql.push_str(&format!(" AND {start} {op} '{}'::timestamptz", at.to_rfc3339()));
            }
        }
        sql
    }

    pub fn sessions_query(&self, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> String {
        let mut list: Vec<String> =
            SESSIONS.iter().map(|c| self.expr("flow_trace_sessions", c, "s.")).collect::<Vec<_>>();
        // The replaced service's TimescaleDB sessions carry an execution id, which ours keep in metadata.
        if self.layout == Layout::ReplacedTimescale && self.tables["flow_trace_sessions"].contains_key("execution_id") {
            let metadata = &mut list[8];
            *metadata = format!(
                "CASE WHEN s.execution_id IS NULL THEN {metadata} ELSE (COALESCE(({metadata})::jsonb, '{{}}'::jsonb) \
                 || jsonb_build_object('executionId', s.execution_id))::text END"
            );
        }
        let id = self.expr("flow_trace_sessions", &SESSIONS[0], "s.");
        format!(
            "COPY (SELECT {} FROM flow_trace_sessions s WHERE {} ORDER BY {}, {id}) TO STDOUT",
            list.join(", "),
            self.window(since, until),
            self.start_time(),
        )
    }

    /// Traces (or events) of the window's sessions.
    pub fn rows_query(
        &self,
        table: &'static str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> String {
        let columns = if table == "flow_traces" { TRACES } else { EVENTS };
        let list: Vec<String> = columns.iter().map(|c| self.expr(table, c, "t.")).collect();
        let session = self.column(table, &columns[1]).map(|(n, _)| n).unwrap_or_else(|| "session_id".into());
        let id = self.column("flow_trace_sessions", &SESSIONS[0]).map(|(n, _)| n).unwrap_or_else(|| "id".into());
        format!(
            "COPY (SELECT {} FROM {table} t WHERE t.{session} IN (SELECT s.{id} FROM flow_trace_sessions s WHERE {})) \
             TO STDOUT",
            list.join(", "),
            self.window(since, until),
        )
    }

    /// Sessions without a start time: outside every window, listed as skipped.
    pub fn sessions_without_start(&self) -> String {
        let id = self.expr("flow_trace_sessions", &SESSIONS[0], "s.");
        format!("SELECT {id} FROM flow_trace_sessions s WHERE {} IS NULL", self.start_time())
    }
}
