//! Writes of `flowtrace import`: the source's rows are first staged in temporary tables of one connection (by
//! `COPY … FROM STDIN`), then stored one batch of whole sessions per transaction.
//!
//! A batch does what ingestion does, in one transaction: it takes the advisory locks of its workflows, draws `seq`
//! from `flow_trace_seq` / `flow_trace_event_seq` in time order, and adds the rows to their sessions' summaries and to
//! `flow_trace_node_minutes`. Rows are new by `(session_id, id)`: those a session already holds are left alone, so a
//! second run stores nothing and a run killed at any point is finished by the next one. A session the target holds as
//! running takes the end the source has since recorded. Nothing is announced: no `pg_notify`, no `flow_session_changes`
//! row (imported history is not news for subscribers or webhooks).

use sqlx::{Connection, PgConnection};

use super::ingest::NODE_MINUTES;
use super::{Store, StoreResult};

/// Staging tables: columns in the order the source's COPY writes them, after `n`, the session's place in the import
/// (which batches are cut by).
const STAGING: [&str; 4] = [
    "CREATE TEMP TABLE import_sessions (n int NOT NULL, id text COLLATE \"C\" NOT NULL, workflow_id text NOT NULL,
        workflow_version_id text, workflow_name text NOT NULL, user_id text, start_time timestamptz NOT NULL,
        end_time timestamptz, status text NOT NULL, metadata jsonb, created_at timestamptz, updated_at timestamptz)",
    "CREATE TEMP TABLE import_traces (n int NOT NULL, id text COLLATE \"C\" NOT NULL,
        session_id text COLLATE \"C\" NOT NULL, timestamp timestamptz NOT NULL, duration float8, status text NOT NULL,
        source_node_id text NOT NULL, source_node_name text, source_node_type text, source_port_id text,
        source_port_name text, source_port_type text, target_node_id text NOT NULL, target_node_name text,
        target_node_type text, target_port_id text, target_port_name text, target_port_type text, data_payload jsonb,
        data_size int8, data_type text, data_preview text, error_message text, error_code text, error_stack text,
        graph_id text, graph_name text, parent_trace_id text COLLATE \"C\", depth int4)",
    "CREATE TEMP TABLE import_events (n int NOT NULL, id text COLLATE \"C\" NOT NULL,
        session_id text COLLATE \"C\" NOT NULL, timestamp timestamptz NOT NULL, node_id text NOT NULL, port_id text,
        event_type text NOT NULL, data jsonb, duration float8, metadata jsonb)",
    // The batch's sessions the target already held before it.
    "CREATE TEMP TABLE import_known (id text COLLATE \"C\" PRIMARY KEY) ON COMMIT DELETE ROWS",
];

/// What one batch stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    pub sessions: u64,
    pub sessions_updated: u64,
    pub traces: u64,
    pub events: u64,
}

impl std::ops::AddAssign for Stored {
    fn add_assign(&mut self, o: Stored) {
        self.sessions += o.sessions;
        self.sessions_updated += o.sessions_updated;
        self.traces += o.traces;
        self.events += o.events;
    }
}

impl Store {
    /// A connection of its own (not returned to the pool) holding the empty staging tables.
    pub async fn import_connection(&self) -> StoreResult<PgConnection> {
        let mut conn = self.pool.acquire().await?.detach();
        for ddl in STAGING {
            sqlx::raw_sql(ddl).execute(&mut conn).await?;
        }
        Ok(conn)
    }
}

/// After staging: indexes for cutting batches, and statistics so that the batch statements plan on real sizes.
pub async fn staged(conn: &mut PgConnection) -> StoreResult<()> {
    sqlx::raw_sql(
        "CREATE INDEX ON import_sessions (n); CREATE INDEX ON import_traces (n); CREATE INDEX ON import_events (n);
         ANALYZE import_sessions; ANALYZE import_traces; ANALYZE import_events",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

const LOCK_WORKFLOWS: &str = "
    SELECT pg_advisory_xact_lock(h) FROM (
        SELECT DISTINCT hashtextextended('flowtrace:' || w, 0) AS h FROM (
            SELECT workflow_id AS w FROM import_sessions WHERE n BETWEEN $1 AND $2
            UNION
            SELECT s.workflow_id FROM flow_trace_sessions s
            WHERE s.id IN (SELECT id FROM import_sessions WHERE n BETWEEN $1 AND $2)
        ) w
    ) l ORDER BY h";

const KNOWN: &str = "
    INSERT INTO import_known SELECT DISTINCT s.id FROM flow_trace_sessions s
    WHERE s.id IN (SELECT id FROM import_sessions WHERE n BETWEEN $1 AND $2)";

/// A session the target holds as running takes the end the source recorded since.
const UPDATE_ENDED: &str = "
    UPDATE flow_trace_sessions s SET status = i.status, end_time = i.end_time,
        metadata = COALESCE(i.metadata, s.metadata), updated_at = now()
    FROM import_sessions i
    WHERE i.n BETWEEN $1 AND $2 AND s.id = i.id AND s.status = 'RUNNING' AND i.status <> 'RUNNING'";

const INSERT_SESSIONS: &str = "
    INSERT INTO flow_trace_sessions (id, start_time, workflow_id, workflow_version_id, workflow_name, user_id, end_time,
        status, metadata, created_at, updated_at)
    SELECT id, start_time, workflow_id, workflow_version_id, workflow_name, user_id, end_time, status, metadata,
        COALESCE(created_at, start_time), COALESCE(updated_at, end_time, created_at, start_time)
    FROM import_sessions i
    WHERE n BETWEEN $1 AND $2 AND NOT EXISTS (SELECT 1 FROM import_known k WHERE k.id = i.id)
    ON CONFLICT DO NOTHING";

/// The batch's sessions with their workflow as the target has it, and the ids already stored in the sessions the target
/// held before (flow_traces_pkey / flow_trace_events_pkey: (session_id, id, timestamp)).
const CONTEXT: &str = "
    wf AS MATERIALIZED (
        SELECT DISTINCT ON (s.id) s.id, s.workflow_id FROM flow_trace_sessions s
        WHERE s.id IN (SELECT id FROM import_sessions WHERE n BETWEEN $1 AND $2)
    )";

const INSERT_TRACES: &str = "
    existing AS MATERIALIZED (
        SELECT x.session_id, x.id FROM flow_traces x WHERE x.session_id IN (SELECT id FROM import_known)
    ),
    ins AS (
        INSERT INTO flow_traces (seq, session_id, workflow_id, id, timestamp, duration, status,
            source_node_id, source_node_name, source_node_type, source_port_id, source_port_name, source_port_type,
            target_node_id, target_node_name, target_node_type, target_port_id, target_port_name, target_port_type,
            data_payload, data_size, data_type, data_preview, error_message, error_code, error_stack,
            graph_id, graph_name, parent_trace_id, depth)
        SELECT nextval('flow_trace_seq'), t.session_id, wf.workflow_id, t.id, t.timestamp, t.duration, t.status,
            t.source_node_id, t.source_node_name, t.source_node_type, t.source_port_id, t.source_port_name,
            t.source_port_type, t.target_node_id, t.target_node_name, t.target_node_type, t.target_port_id,
            t.target_port_name, t.target_port_type, t.data_payload,
            COALESCE(t.data_size, octet_length(t.data_payload::text)), t.data_type, t.data_preview, t.error_message,
            t.error_code, t.error_stack, CASE WHEN btrim(t.graph_id) <> '' THEN t.graph_id ELSE 'main' END,
            t.graph_name, t.parent_trace_id, COALESCE(t.depth, 0)
        FROM import_traces t JOIN wf ON wf.id = t.session_id
        WHERE t.n BETWEEN $1 AND $2
            AND NOT EXISTS (SELECT 1 FROM existing e WHERE e.session_id = t.session_id AND e.id = t.id)
        ORDER BY t.timestamp, t.id
        ON CONFLICT DO NOTHING
        RETURNING session_id, status, data_size, duration, timestamp, source_node_id, target_node_id
    ),
    agg AS (
        SELECT session_id, count(*) AS n,
            count(*) FILTER (WHERE status = 'SUCCESS') AS ok,
            count(*) FILTER (WHERE status = 'ERROR') AS err,
            count(*) FILTER (WHERE status = 'WARNING') AS warn,
            COALESCE(sum(data_size), 0) AS bytes,
            COALESCE(sum(duration), 0) AS dur,
            count(duration) AS timed
        FROM ins GROUP BY session_id
    ),
    upd AS (
        UPDATE flow_trace_sessions s SET
            total_traces = s.total_traces + agg.n,
            success_count = s.success_count + agg.ok,
            error_count = s.error_count + agg.err,
            warning_count = s.warning_count + agg.warn,
            total_data_size = s.total_data_size + agg.bytes,
            total_duration = s.total_duration + agg.dur,
            timed_traces = s.timed_traces + agg.timed
        FROM agg WHERE s.id = agg.session_id
        RETURNING 1
    )";

/// What the traces' CTEs count: the traces inserted and the sessions updated.
const COUNT_TRACES: &str = "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)";

const INSERT_EVENTS: &str = "
    existing AS MATERIALIZED (
        SELECT x.session_id, x.id FROM flow_trace_events x WHERE x.session_id IN (SELECT id FROM import_known)
    ),
    ins AS (
        INSERT INTO flow_trace_events
            (seq, session_id, workflow_id, id, timestamp, node_id, port_id, event_type, data, duration, metadata)
        SELECT nextval('flow_trace_event_seq'), e.session_id, wf.workflow_id, e.id, e.timestamp, e.node_id, e.port_id,
            e.event_type, e.data, e.duration, e.metadata
        FROM import_events e JOIN wf ON wf.id = e.session_id
        WHERE e.n BETWEEN $1 AND $2
            AND NOT EXISTS (SELECT 1 FROM existing x WHERE x.session_id = e.session_id AND x.id = e.id)
        ORDER BY e.timestamp, e.id
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*) FROM ins";

/// Stores the staged sessions `first..=last` with their traces and events, in one transaction.
pub async fn store_batch(conn: &mut PgConnection, first: i32, last: i32) -> StoreResult<Stored> {
    let mut tx = conn.begin().await?;
    sqlx::query(LOCK_WORKFLOWS).bind(first).bind(last).execute(&mut *tx).await?;
    sqlx::query(KNOWN).bind(first).bind(last).execute(&mut *tx).await?;
    let updated = sqlx::query(UPDATE_ENDED).bind(first).bind(last).execute(&mut *tx).await?.rows_affected();
    let sessions = sqlx::query(INSERT_SESSIONS).bind(first).bind(last).execute(&mut *tx).await?.rows_affected();
    let (traces, _): (i64, i64) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("WITH {CONTEXT}, {INSERT_TRACES}, {NODE_MINUTES} {COUNT_TRACES}")))
            .bind(first)
            .bind(last)
            .fetch_one(&mut *tx)
            .await?;
    let events: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("WITH {CONTEXT}, {INSERT_EVENTS}")))
        .bind(first)
        .bind(last)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Stored { sessions, sessions_updated: updated, traces: traces as u64, events: events as u64 })
}
