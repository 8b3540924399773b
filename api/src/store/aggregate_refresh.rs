//! Keeps the continuous aggregates exact after late data (TimescaleDB only; plain mode's views are exact already).
//!
//! Real-time aggregation covers rows newer than an aggregate's watermark. A row written or changed below it (a
//! backfilled session, an import, a session completing after its hour was materialised) is recorded by TimescaleDB
//! in its invalidation logs, and until a refresh the aggregate misses it. The logs are the durable list of what is
//! pending, whichever process wrote the rows: a round reads them, clips them to what can be refreshed, and refreshes
//! each aggregate over the hull of its pending ranges. TimescaleDB re-materialises only the invalidated buckets in
//! that window, so one call per aggregate coalesces any number of writes.
//!
//! What can be refreshed: below the watermark, and only where retention has dropped no raw row of a bucket, or the
//! refresh would erase history the aggregate keeps on purpose. Aggregates are refreshed in the policies' order, so
//! the daily sessions aggregate sees what the hourly one just materialised.

use std::time::Duration;

use chrono::{DateTime, Utc};
use migration::Policies;
use sqlx::PgConnection;

use super::{Store, StoreResult};

/// The advisory lock held while refreshing: one process at a time; a server's round skips while another holds it.
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('flowtrace-aggregate-refresh', 0))";
const LOCK: &str = "SELECT true FROM pg_advisory_lock(hashtextextended('flowtrace-aggregate-refresh', 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('flowtrace-aggregate-refresh', 0))";

/// An aggregate's buckets whose raw rows changed after they were materialised, as ranges of whole buckets, merged
/// and oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub view: String,
    /// Rows at or after this time are aggregated at read time; null before the first materialisation.
    pub watermark: Option<DateTime<Utc>>,
    pub ranges: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// What one round did to one aggregate.
#[derive(Clone, Debug, PartialEq)]
pub struct Refreshed {
    pub view: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The retention and chunk width of an aggregate's source: refreshing stays a chunk's width after the retention
/// horizon, where every bucket still has all its raw rows (retention drops whole chunks).
fn horizon(policies: &Policies, source: &str) -> Option<(String, String)> {
    policies.table(source).map(|t| (t.retain_for.clone(), t.chunk_interval.clone()))
}

#[derive(sqlx::FromRow)]
struct CatalogRange {
    watermark: Option<DateTime<Utc>>,
    lo: Option<DateTime<Utc>>,
    hi: Option<DateTime<Utc>>,
}

/// Pending ranges of one aggregate, clipped to what can be refreshed: after the retention horizon, below the watermark.
async fn pending_of(conn: &mut PgConnection, view: &str, retain: &str, chunk: &str) -> StoreResult<Pending> {
    // The catalog keeps times in TimescaleDB's internal microseconds, its extremes meaning unbounded: ranges (both
    // ends included, so one row is a range of one point) are clipped there, and only finite times leave as
    // timestamps.
    let rows: Vec<CatalogRange> = sqlx::query_as(
        // An aggregate built on another (the daily sessions on the hourly) also misses what its parent misses.
        "WITH RECURSIVE agg AS (
            SELECT mat_hypertable_id AS mat, raw_hypertable_id AS raw, parent_mat_hypertable_id AS parent,
                _timescaledb_functions.cagg_watermark(mat_hypertable_id) AS wm
            FROM _timescaledb_catalog.continuous_agg
            WHERE user_view_schema = current_schema() AND user_view_name = $1
         ), chain AS (
            SELECT mat, raw, parent FROM agg
            UNION ALL
            SELECT c.mat_hypertable_id, c.raw_hypertable_id, c.parent_mat_hypertable_id
            FROM _timescaledb_catalog.continuous_agg c JOIN chain ON c.mat_hypertable_id = chain.parent
         ), logged AS (
            SELECT l.lowest_modified_value AS lo, l.greatest_modified_value AS hi
            FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l JOIN chain ON l.hypertable_id = chain.raw
            UNION ALL
            SELECT l.lowest_modified_value, l.greatest_modified_value
            FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log l
            JOIN chain ON l.materialization_id = chain.mat
         ), clipped AS (
            SELECT greatest(lo, _timescaledb_functions.time_to_internal(
                       date_trunc('day', now() - $2::interval + $3::interval, 'UTC') + INTERVAL '1 day')) AS lo,
                   least(hi, agg.wm - 1) AS hi
            FROM logged, agg
         )
         SELECT CASE WHEN agg.wm > _timescaledb_functions.get_internal_time_min('timestamptz'::regtype)
                    THEN _timescaledb_functions.to_timestamp(agg.wm) END AS watermark,
                time_bucket(b.width, _timescaledb_functions.to_timestamp(c.lo)) AS lo,
                least(time_bucket(b.width, _timescaledb_functions.to_timestamp(c.hi)) + b.width,
                      _timescaledb_functions.to_timestamp(agg.wm)) AS hi
         FROM agg
         CROSS JOIN LATERAL (SELECT bucket_width::interval AS width FROM _timescaledb_catalog.continuous_aggs_bucket_function
                             WHERE mat_hypertable_id = agg.mat) b
         LEFT JOIN clipped c ON c.lo <= c.hi ORDER BY 2",
    )
    .bind(view)
    .bind(retain)
    .bind(chunk)
    .fetch_all(&mut *conn)
    .await?;
    let watermark = rows.first().and_then(|r| r.watermark);
    let mut ranges: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (lo, hi) in rows.into_iter().filter_map(|r| r.lo.zip(r.hi)) {
        match ranges.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => ranges.push((lo, hi)),
        }
    }
    Ok(Pending { view: view.to_owned(), watermark, ranges })
}

/// Every aggregate's pending ranges, in the policies' order.
pub async fn pending(conn: &mut PgConnection, policies: &Policies) -> StoreResult<Vec<Pending>> {
    let mut all = Vec::new();
    for a in &policies.aggregates {
        let Some((retain, chunk)) = horizon(policies, a.source) else { continue };
        all.push(pending_of(conn, a.view, &retain, &chunk).await?);
    }
    Ok(all)
}

/// Refreshes each aggregate over the hull of its pending buckets. Outside a transaction, as TimescaleDB requires.
async fn refresh_pending(conn: &mut PgConnection, policies: &Policies) -> StoreResult<Vec<Refreshed>> {
    let mut done = Vec::new();
    for a in &policies.aggregates {
        let Some((retain, chunk)) = horizon(policies, a.source) else { continue };
        let pending = pending_of(conn, a.view, &retain, &chunk).await?;
        let (Some(&(from, _)), Some(&(_, to))) = (pending.ranges.first(), pending.ranges.last()) else {
            continue;
        };
        sqlx::query(
            "INSERT INTO flow_aggregate_refreshes (view_name, pending_since) VALUES ($1, now())
             ON CONFLICT (view_name) DO NOTHING",
        )
        .bind(a.view)
        .execute(&mut *conn)
        .await?;
        // The view name is ours and the times come from the database: nothing here is a client's text.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CALL refresh_continuous_aggregate('{}', '{}'::timestamptz, '{}'::timestamptz)",
            a.view,
            from.to_rfc3339(),
            to.to_rfc3339()
        )))
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM flow_aggregate_refreshes WHERE view_name = $1")
            .bind(a.view)
            .execute(&mut *conn)
            .await?;
        done.push(Refreshed { view: a.view.to_owned(), from, to });
    }
    Ok(done)
}

/// Refreshes what is pending under the lock, waiting for it (`wait`) or giving up when another process holds it.
/// Returns `None` when it gave up.
pub async fn refresh_locked(
    conn: &mut PgConnection,
    policies: &Policies,
    wait: bool,
) -> StoreResult<Option<Vec<Refreshed>>> {
    let locked: bool = sqlx::query_scalar(if wait { LOCK } else { TRY_LOCK }).fetch_one(&mut *conn).await?;
    if !locked {
        return Ok(None);
    }
    let done = refresh_pending(conn, policies).await;
    sqlx::query(UNLOCK).execute(&mut *conn).await?;
    done.map(Some)
}

/// One round, if no other process is refreshing: logged; a failure is logged and left to the next round.
pub async fn refresh_round(store: &Store, policies: &Policies) {
    let result = async {
        let mut conn = store.pool().acquire().await?;
        let done = refresh_locked(&mut conn, policies, false).await;
        if done.is_err() {
            // The lock may still be held: closing the connection releases it.
            drop(conn.detach());
        }
        done
    }
    .await;
    match result {
        Ok(done) => {
            for r in done.unwrap_or_default() {
                tracing::debug!(view = r.view, from = %r.from, to = %r.to, "refreshed late data");
            }
        }
        Err(err) => tracing::warn!(%err, "refreshing late data failed; retrying next round"),
    }
}

/// Runs a round every `every` until the process ends.
pub async fn run_refresh(store: Store, policies: Policies, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        refresh_round(&store, &policies).await;
    }
}
