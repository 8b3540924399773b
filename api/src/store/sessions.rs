//! Sessions: start, complete, look up, list.

use std::collections::HashMap;
use std::sync::LazyLock;

use super::cursor::{Page, PageOf, SessionKey, TraceKey, finish, keyset};
use super::ids::{check_id, generate_id};
use super::ingest::{check_name, check_time};
use super::notify::{Kind, Wakeup};
use super::traces::TRACE_COLUMNS;
use super::{Sql, Store, StoreError, StoreResult, like_pattern};
use crate::domain::SessionStatus;
use crate::limits::Limits;
use chrono::{DateTime, Utc};
use entity::{session, trace};
use serde_json::Value as Json;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Postgres, Row, Transaction};

#[derive(Clone, Debug, Default)]
pub struct NewSession {
    pub id: Option<String>,
    pub workflow_id: String,
    pub workflow_name: String,
    pub workflow_version_id: Option<String>,
    pub user_id: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub metadata: Option<Json>,
}

#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub workflow_id: Option<String>,
    pub status: Option<SessionStatus>,
    pub user_id: Option<String>,
    pub started_after: Option<DateTime<Utc>>,
    pub started_before: Option<DateTime<Utc>>,
    /// Matches workflow name or id, case-insensitively.
    pub search: Option<String>,
    /// Inclusive bounds on an ended session's duration in milliseconds; running sessions match neither.
    pub min_duration: Option<f64>,
    pub max_duration: Option<f64>,
    /// Sessions with (true) or without (false) a failed trace.
    pub has_errors: Option<bool>,
    /// Sessions whose metadata contains this JSON (`@>`).
    pub metadata: Option<serde_json::Value>,
    /// Matches, case-insensitively, a node or port name or id that one of the session's traces passed through.
    pub node: Option<String>,
}

impl SessionFilter {
    pub fn validate(&self) -> StoreResult<()> {
        super::traces::check_durations(self.min_duration, self.max_duration)?;
        super::traces::check_range(self.started_after, self.started_before)
    }
}

pub const SESSION_COLUMNS: &str =
    "id, start_time, workflow_id, workflow_version_id, workflow_name, user_id, end_time, status,
    total_traces, success_count, error_count, warning_count, total_data_size, total_duration, timed_traces,
    metadata, created_at, updated_at";

impl Store {
    /// Creates the session, or returns the existing one with that id (a retried start is not an error).
    pub async fn start_session(&self, limits: &Limits, new: NewSession) -> StoreResult<session::Model> {
        for (field, value, required) in [
            ("workflowId", Some(new.workflow_id.as_str()), true),
            ("workflowName", Some(new.workflow_name.as_str()), true),
            ("workflowVersionId", new.workflow_version_id.as_deref(), false),
            ("userId", new.user_id.as_deref(), false),
        ] {
            check_name(limits, || field.to_owned(), value, required)?;
        }
        if let Some(at) = new.start_time {
            check_time(at).map_err(|why| StoreError::BadInput(format!("startTime {why}")))?;
        }
        let metadata = match &new.metadata {
            Some(m) if m.to_string().len() > limits.max_payload_bytes => {
                return Err(StoreError::LimitExceeded(format!(
                    "metadata is larger than {} bytes (max_payload_bytes)",
                    limits.max_payload_bytes
                )));
            }
            other => other.clone(),
        };
        if let Some(id) = &new.id {
            check_id(|| "id".into(), id)?;
        }
        let id = new.id.unwrap_or_else(generate_id);
        let mut tx = self.pool.begin().await?;
        // The key includes start_time, so ON CONFLICT alone would let a retry without startTime create a second row:
        // serialise starts of one id and look first.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('flowtrace-session:' || $1::text, 0))")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let existing: Option<(String,)> = sqlx::query_as("SELECT id FROM flow_trace_sessions WHERE id = $1 LIMIT 1")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_none() {
            sqlx::query(
                "INSERT INTO flow_trace_sessions
                    (id, start_time, workflow_id, workflow_version_id, workflow_name, user_id, metadata)
                 VALUES ($1, COALESCE($2, now()), $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(new.start_time)
            .bind(&new.workflow_id)
            .bind(&new.workflow_version_id)
            .bind(&new.workflow_name)
            .bind(&new.user_id)
            .bind(metadata)
            .execute(&mut *tx)
            .await?;
            record_change(&mut tx, &id, &new.workflow_id, SessionStatus::Running).await?;
        }
        // Read inside the transaction: after commit, retention may already delete a session that started long ago.
        let session: session::Model = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE id = $1 LIMIT 1"
        )))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Ends a session. Repeating the same completion returns the session unchanged, also when the repeats run at
    /// the same time; changing the outcome of an ended session is refused.
    pub async fn complete_session(
        &self,
        id: &str,
        status: SessionStatus,
        end_time: Option<DateTime<Utc>>,
    ) -> StoreResult<session::Model> {
        check_id(|| "id".into(), id)?;
        if status == SessionStatus::Running {
            return Err(StoreError::BadInput(
                "status must be COMPLETED, FAILED or CANCELLED to complete a session".into(),
            ));
        }
        if let Some(at) = end_time {
            check_time(at).map_err(|why| StoreError::BadInput(format!("endTime {why}")))?;
        }
        let mut tx = self.pool.begin().await?;
        // Completions of one session queue on its row: each sees what the one before it did, so an identical repeat
        // finds the session ended as it asks and returns it.
        let current: Option<session::Model> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE id = $1 LIMIT 1 FOR UPDATE"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let current = current.ok_or_else(|| StoreError::NotFound(format!("session {id} does not exist")))?;
        if current.status != SessionStatus::Running {
            if current.status == status && end_time.is_none_or(|at| Some(at) == current.end_time) {
                return Ok(current);
            }
            return Err(StoreError::BadInput(format!(
                "session {id} already ended as {} at {}; an ended session cannot be completed again",
                current.status.as_str(),
                current.end_time.map(|t| t.to_rfc3339()).unwrap_or_default()
            )));
        }
        let end = end_time.unwrap_or_else(Utc::now);
        if end < current.start_time {
            return Err(StoreError::BadInput(format!(
                "endTime {} is before the session's startTime {}",
                end.to_rfc3339(),
                current.start_time.to_rfc3339()
            )));
        }
        let updated: session::Model = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE flow_trace_sessions SET status = $3, end_time = $4, updated_at = now()
             WHERE id = $1 AND start_time = $2 RETURNING {SESSION_COLUMNS}"
        )))
        .bind(id)
        .bind(current.start_time)
        .bind(status.as_str())
        .bind(end)
        .fetch_one(&mut *tx)
        .await?;
        record_change(&mut tx, id, &current.workflow_id, status).await?;
        tx.commit().await?;
        Ok(updated)
    }

    pub async fn session(&self, id: &str) -> StoreResult<Option<session::Model>> {
        let mut sql = Sql::new(&format!("SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE id = "));
        let p = sql.bind(id);
        sql.push(&p).push(" LIMIT 1");
        Ok(self.all(sql).await?.into_iter().next())
    }

    /// A session with one page of its traces, read in one statement: the second statement of reading them apart costs
    /// PostgreSQL more than the join (protocol, locks, executor start and end).
    pub async fn session_with_traces(
        &self,
        id: &str,
        page: &Page<TraceKey>,
    ) -> StoreResult<Option<(session::Model, PageOf<trace::Model>)>> {
        static COLUMNS: LazyLock<String> = LazyLock::new(|| {
            SESSION_COLUMNS.split(',').map(|c| format!("{c} AS s_{}", c.trim())).collect::<Vec<_>>().join(",")
        });
        let mut sql = Sql::new(&format!("SELECT * FROM (SELECT {} FROM flow_trace_sessions WHERE id = ", *COLUMNS));
        let p = sql.bind(id);
        // The traces join on the session row's id: with the bound id repeated there, the same rows cost PostgreSQL
        // half as much again per call (BENCHMARKS.md).
        sql.push(&format!(
            "{p} LIMIT 1) s LEFT JOIN LATERAL (SELECT {TRACE_COLUMNS} FROM flow_traces WHERE session_id = s.s_id"
        ));
        keyset(&mut sql, ("timestamp", "seq"), page, false);
        sql.push(") t ON TRUE");
        let rows = self.rows(sql).await?;
        let Some(first) = rows.first() else { return Ok(None) };
        let session = prefixed_session(first)?;
        let mut traces = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.try_get::<Option<&str>, _>("id")?.is_some() {
                traces.push(trace::Model::from_row(row)?);
            }
        }
        // In the page's order whatever order the join returned them in, as `finish` expects.
        traces.sort_by_key(|t| (t.timestamp, t.seq));
        if page.from_end {
            traces.reverse();
        }
        Ok(Some((session, finish(traces, page))))
    }

    /// The sessions with these ids, by id (one read for many, as live delivery needs); unknown ids are left out.
    pub async fn sessions_by_id(&self, ids: Vec<String>) -> StoreResult<HashMap<String, session::Model>> {
        let mut sql = Sql::new(&format!("SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE id = ANY("));
        let p = sql.bind(ids);
        sql.push(&p).push(")");
        Ok(self.all::<session::Model>(sql).await?.into_iter().map(|s| (s.id.clone(), s)).collect())
    }

    /// Newest first, keyset-paginated on (start_time, id).
    pub async fn sessions(
        &self,
        filter: &SessionFilter,
        page: &Page<SessionKey>,
    ) -> StoreResult<PageOf<session::Model>> {
        let mut sql = Sql::new(&format!("SELECT {SESSION_COLUMNS} FROM flow_trace_sessions WHERE TRUE"));
        filter_sql(&mut sql, filter);
        keyset(&mut sql, ("start_time", "id"), page, true);
        Ok(finish(self.all(sql).await?, page))
    }

    pub async fn count_sessions(&self, filter: &SessionFilter) -> StoreResult<i64> {
        let mut sql = Sql::new("SELECT count(*) AS n FROM flow_trace_sessions WHERE TRUE");
        filter_sql(&mut sql, filter);
        self.count(sql).await
    }
}

fn filter_sql(sql: &mut Sql, f: &SessionFilter) {
    if let Some(v) = &f.workflow_id {
        let p = sql.bind(v.clone());
        sql.push(&format!(" AND workflow_id = {p}"));
    }
    if let Some(v) = f.status {
        let p = sql.bind(v.as_str());
        sql.push(&format!(" AND status = {p}"));
    }
    if let Some(v) = &f.user_id {
        let p = sql.bind(v.clone());
        sql.push(&format!(" AND user_id = {p}"));
    }
    if let Some(v) = f.started_after {
        let p = sql.bind(v);
        sql.push(&format!(" AND start_time >= {p}"));
    }
    if let Some(v) = f.started_before {
        let p = sql.bind(v);
        sql.push(&format!(" AND start_time < {p}"));
    }
    if let Some(v) = &f.search {
        let p = sql.bind(like_pattern(v));
        sql.push(&format!(" AND (workflow_name ILIKE {p} OR workflow_id ILIKE {p})"));
    }
    const MS: &str = "extract(epoch FROM end_time - start_time) * 1000";
    if let Some(v) = f.min_duration {
        let p = sql.bind(v);
        sql.push(&format!(" AND {MS} >= {p}"));
    }
    if let Some(v) = f.max_duration {
        let p = sql.bind(v);
        sql.push(&format!(" AND {MS} <= {p}"));
    }
    if let Some(errors) = f.has_errors {
        sql.push(if errors { " AND error_count > 0" } else { " AND error_count = 0" });
    }
    if let Some(v) = &f.metadata {
        let p = sql.bind(sqlx::types::Json(v.clone()));
        sql.push(&format!(" AND metadata @> {p}"));
    }
    if let Some(v) = &f.node {
        // Served by the traces' session index: the traces of each candidate session are read, so on a large store
        // this goes with a workflow or a time range.
        let p = sql.bind(like_pattern(v));
        sql.push(&format!(
            " AND EXISTS (SELECT 1 FROM flow_traces t WHERE t.session_id = flow_trace_sessions.id
                AND (t.source_node_id ILIKE {p} OR t.target_node_id ILIKE {p} OR t.source_node_name ILIKE {p}
                  OR t.target_node_name ILIKE {p} OR t.source_port_name ILIKE {p} OR t.target_port_name ILIKE {p}))"
        ));
    }
}

/// A session started or ended (`status` is what it became): the change row `sessionUpdates` and webhooks catch up
/// from, and the wake-up carrying its `seq`.
async fn record_change(
    tx: &mut Transaction<'_, Postgres>,
    session_id: &str,
    workflow_id: &str,
    status: SessionStatus,
) -> StoreResult<()> {
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO flow_session_changes (session_id, workflow_id, status) VALUES ($1, $2, $3) RETURNING seq",
    )
    .bind(session_id)
    .bind(workflow_id)
    .bind(status.as_str())
    .fetch_one(&mut **tx)
    .await?;
    Wakeup { kind: Kind::Session, session_id: session_id.to_owned(), workflow_id: workflow_id.to_owned(), seq }
        .send(tx)
        .await
}

/// The session of a row whose session columns are prefixed `s_` (see `session_with_traces`).
fn prefixed_session(row: &PgRow) -> Result<session::Model, sqlx::Error> {
    Ok(session::Model {
        id: row.try_get("s_id")?,
        start_time: row.try_get("s_start_time")?,
        workflow_id: row.try_get("s_workflow_id")?,
        workflow_version_id: row.try_get("s_workflow_version_id")?,
        workflow_name: row.try_get("s_workflow_name")?,
        user_id: row.try_get("s_user_id")?,
        end_time: row.try_get("s_end_time")?,
        status: row.try_get("s_status")?,
        total_traces: row.try_get("s_total_traces")?,
        success_count: row.try_get("s_success_count")?,
        error_count: row.try_get("s_error_count")?,
        warning_count: row.try_get("s_warning_count")?,
        total_data_size: row.try_get("s_total_data_size")?,
        total_duration: row.try_get("s_total_duration")?,
        timed_traces: row.try_get("s_timed_traces")?,
        metadata: row.try_get("s_metadata")?,
        created_at: row.try_get("s_created_at")?,
        updated_at: row.try_get("s_updated_at")?,
    })
}
