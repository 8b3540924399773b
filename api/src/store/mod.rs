//! SQL by capability. Nothing here knows about GraphQL: functions take domain values and return entity models.

pub mod aggregate_refresh;
pub mod analytics;
pub mod archive;
pub mod compare;
pub mod cursor;
pub mod dependency_graph;
pub mod events;
pub mod health;
pub mod ids;
pub mod import;
pub mod ingest;
pub mod live;
pub mod notify;
pub mod percentiles;
pub mod replicas;
pub mod report;
pub mod retention;
pub mod scope;
pub mod sessions;
pub mod storage_stats;
pub mod time_travel;
pub mod traces;
pub mod webhooks;
pub mod workflow_analytics;

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use migration::{MigratorTrait, StorageMode};
use sea_orm::{DatabaseConnection, DbErr, SqlxPostgresConnector};
use sqlx::postgres::{PgArguments, PgPoolOptions, PgRow};
use sqlx::{Arguments, PgPool, Postgres};
use tokio::sync::Semaphore;

use replicas::{Position, Replicas};
use scope::Scope;

/// What can go wrong below the API. Mapped once to GraphQL error codes in `crate::error`.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A query failed for a reason that is not the client's: the log line names the `?` that met it.
    #[error("query at {at} failed: {source}")]
    Database { source: Arc<sqlx::Error>, at: &'static Location<'static> },
    /// Something else below the API failed.
    #[error("{0}")]
    Internal(String),
}

impl StoreError {
    pub fn internal(message: impl Into<String>) -> StoreError {
        StoreError::Internal(message.into())
    }

    #[track_caller]
    fn of_sqlx(err: Arc<sqlx::Error>) -> StoreError {
        match &*err {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(err.to_string())
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) => {
                StoreError::Unavailable(err.to_string())
            }
            // Data exceptions are values the database refused: the client's input, described without the
            // database's own text (which names internals). The API checks these values first; this is the net.
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("22")) => {
                tracing::debug!(%err, "the database refused a value");
                StoreError::BadInput(data_exception(db.code().as_deref().unwrap_or("")).into())
            }
            sqlx::Error::Encode(_) => {
                tracing::debug!(%err, "a value could not be encoded for the database");
                StoreError::BadInput("a value cannot be stored (out of range)".into())
            }
            _ => StoreError::Database { source: err, at: Location::caller() },
        }
    }
}

impl From<sqlx::Error> for StoreError {
    /// `#[track_caller]`: `?` passes its own location, which the log then names.
    #[track_caller]
    fn from(err: sqlx::Error) -> Self {
        StoreError::of_sqlx(Arc::new(err))
    }
}

impl From<DbErr> for StoreError {
    #[track_caller]
    fn from(err: DbErr) -> Self {
        match err {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => StoreError::Unavailable(err.to_string()),
            DbErr::Query(sea_orm::RuntimeErr::SqlxError(e)) | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) => {
                StoreError::of_sqlx(e)
            }
            other => StoreError::Internal(other.to_string()),
        }
    }
}

/// What a data exception (SQLSTATE class 22) says to the client.
fn data_exception(code: &str) -> &'static str {
    match code {
        "22P05" | "22021" => "a text or JSON value contains a character that cannot be stored (such as \\u0000)",
        "22008" | "22007" => "a time is outside the range that can be stored (4713 BC to 294276 AD)",
        "22003" => "a number is out of the range that can be stored",
        "22001" => "a value is longer than can be stored",
        _ => "a value cannot be stored",
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The database, through sqlx pools. Every query runs through sqlx (`Sql` with `all`, or `sqlx::query…` with a
/// transaction from `pool.begin()`); the SeaORM connection over the primary's plain pool serves only migrations and
/// storage policies (the `migration` crate).
///
/// A store `scoped` to a limited caller reads on a second pool instead, whose connections see the `flowtrace_scoped`
/// views first (see `scope`). With `replicas`, reads (`all`, `all_serial`, `read_tx`) go to a replica that has
/// replayed this store's `floor`, when there is one.
#[derive(Clone)]
pub struct Store {
    /// The primary's pool this store uses: the plain one, or the scoped one for a limited caller.
    pool: PgPool,
    primary: Pools,
    orm: DatabaseConnection,
    url: Arc<str>,
    /// Live subscriptions may hold at most half the pool, so a burst of wake-ups never starves ingest and queries.
    live_reads: Arc<Semaphore>,
    /// Whose rows this store reads: everyone's when `None`.
    scope: Option<Arc<Scope>>,
    replicas: Option<Arc<Replicas>>,
    /// Reads must see at least this WAL position: the caller's own write, or what a wake-up announced.
    floor: Option<Position>,
    /// The latest position the listener has seen, raising `floor` for every read (live subscriptions).
    following: Option<Arc<AtomicU64>>,
}

/// The pools of one server: for every-row reads and writes, and for limited callers (`scope`). Of the first, a few
/// connections form a pool of their own (`hot`) that every-row reads take first while one is free.
#[derive(Clone)]
pub(crate) struct Pools {
    plain: PgPool,
    scoped: PgPool,
    hot: Option<PgPool>,
}

/// Connections of the `hot` pool, when the pool has at least four times as many.
const HOT_CONNECTIONS: u32 = 2;

impl Pools {
    /// Connects lazily: the server starts (and stays up) while the database is down, and requests fail fast.
    fn connect_lazy(url: &str, max_connections: u32) -> StoreResult<Pools> {
        let hot = (max_connections >= 4 * HOT_CONNECTIONS)
            .then(|| pool_options(HOT_CONNECTIONS).connect_lazy(url))
            .transpose()?;
        let rest = max_connections - hot.as_ref().map_or(0, |_| HOT_CONNECTIONS);
        let plain = pool_options(rest).connect_lazy(url)?;
        let scoped = pool_options(max_connections)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET search_path = flowtrace_scoped, public").execute(conn).await?;
                    Ok(())
                })
            })
            .connect_lazy(url)?;
        Ok(Pools { plain, scoped, hot })
    }

    /// A connection for a read of every row. sqlx hands out the connection idle longest: after a burst has opened
    /// many, each request in a quiet spell would land on another backend whose caches have gone cold, costing the
    /// database more per query. Reads go to the few `hot` connections while one is free (or not yet opened), so at
    /// low load they run on warm backends; under load the rest take the overflow.
    async fn reader(&self) -> Result<sqlx::pool::PoolConnection<Postgres>, sqlx::Error> {
        if let Some(hot) = &self.hot
            && (hot.num_idle() > 0 || hot.size() < HOT_CONNECTIONS)
        {
            return hot.acquire().await;
        }
        self.plain.acquire().await
    }

    async fn close(&self) {
        if let Some(hot) = &self.hot {
            hot.close().await;
        }
        self.scoped.close().await;
        self.plain.close().await;
    }
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        // Fail fast while the database is down: requests answer DATABASE_UNAVAILABLE instead of hanging.
        .acquire_timeout(Duration::from_secs(5))
        // sqlx checks every connection when it goes back to the pool; checking again on every acquire costs a
        // round trip per request (a large part of a sessions page, see BENCHMARKS.md). Only a connection idle for a
        // while, which the database may have dropped meanwhile, is checked before use.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > Duration::from_secs(1) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl Store {
    /// Connects lazily: the server starts (and stays up) while the database is down, and requests fail fast.
    pub fn connect_lazy(url: &str, max_connections: u32) -> StoreResult<Store> {
        let primary = Pools::connect_lazy(url, max_connections)?;
        let orm = SqlxPostgresConnector::from_sqlx_postgres_pool(primary.plain.clone());
        let live_reads = Arc::new(Semaphore::new((max_connections as usize / 2).max(1)));
        Ok(Store {
            pool: primary.plain.clone(),
            primary,
            orm,
            url: url.into(),
            live_reads,
            scope: None,
            replicas: None,
            floor: None,
            following: None,
        })
    }

    /// This store reading from `replicas` where it can.
    pub fn with_replicas(&self, replicas: Arc<Replicas>) -> Store {
        Store { replicas: Some(replicas), ..self.clone() }
    }

    /// This store reading from the primary only (what webhooks and background jobs use).
    pub fn primary_only(&self) -> Store {
        Store { replicas: None, ..self.clone() }
    }

    pub fn replicas(&self) -> Option<&Replicas> {
        self.replicas.as_deref()
    }

    /// This store for reads that must see everything up to `floor`.
    pub fn at_least(&self, floor: Option<Position>) -> Store {
        Store { floor: self.floor.max(floor), ..self.clone() }
    }

    /// This store for reads that must see everything up to the latest position `seen` holds when they start.
    pub fn following(&self, seen: Arc<AtomicU64>) -> Store {
        Store { following: Some(seen), ..self.clone() }
    }

    /// Where the primary's WAL ends now: at or after every commit so far. What a client passes back (`atLeast`) to
    /// read its own writes from a replica.
    pub async fn position(&self) -> StoreResult<Position> {
        let text: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text").fetch_one(&self.pool).await?;
        text.parse().map_err(StoreError::Internal)
    }

    /// This store for a caller who may see only `scope`'s rows (`None`: every row).
    pub fn scoped(&self, scope: Option<Arc<Scope>>) -> Store {
        let Some(scope) = scope else { return self.clone() };
        Store { pool: self.primary.scoped.clone(), scope: Some(scope), ..self.clone() }
    }

    /// The caller's scope, when it is limited.
    pub fn scope(&self) -> Option<&Scope> {
        self.scope.as_deref()
    }

    /// Refuses a limited caller an aggregate outside its granted workflows (`Scope::check_aggregate`).
    pub fn check_aggregate(&self, workflow_id: Option<&str>) -> StoreResult<()> {
        self.scope().map_or(Ok(()), |s| s.check_aggregate(workflow_id))
    }

    /// The pool a read runs on: a replica that has replayed the floor, else the primary.
    async fn read_pool(&self) -> PgPool {
        let Some(replicas) = &self.replicas else { return self.pool.clone() };
        let seen = self.following.as_ref().map(|s| Position(s.load(AtomicOrdering::Acquire)));
        let floor = self.floor.max(seen).filter(|p| p.0 > 0);
        replicas.pick(floor, self.scope.is_some()).await.unwrap_or_else(|| self.pool.clone())
    }

    /// Waits until the database answers, for at most `timeout`.
    pub async fn wait_until_reachable(&self, timeout: Duration) -> StoreResult<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match sqlx::query("SELECT 1").execute(&self.pool).await {
                Ok(_) => return Ok(()),
                Err(err) if tokio::time::Instant::now() >= deadline => return Err(err.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pools, waiting for connections in use to come back.
    pub async fn close(&self) {
        if let Some(replicas) = &self.replicas {
            replicas.close().await;
        }
        self.primary.close().await;
    }

    pub fn orm(&self) -> &DatabaseConnection {
        &self.orm
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn migrate_up(&self) -> StoreResult<()> {
        migration::Migrator::up(&self.orm, None).await?;
        Ok(())
    }

    pub async fn migrate_down(&self, steps: Option<u32>) -> StoreResult<()> {
        migration::Migrator::down(&self.orm, steps).await?;
        Ok(())
    }

    /// Migration names with whether each is applied.
    pub async fn migration_status(&self) -> StoreResult<Vec<(String, bool)>> {
        let migrations = migration::Migrator::get_migration_with_status(&self.orm).await?;
        Ok(migrations
            .iter()
            .map(|m| (m.name().to_owned(), matches!(m.status(), migration::MigrationStatus::Applied)))
            .collect())
    }

    pub async fn mode(&self) -> StoreResult<StorageMode> {
        Ok(migration::mode::current(&self.orm).await?)
    }

    async fn all<M: Row>(&self, sql: Sql) -> StoreResult<Vec<M>> {
        Ok(self.rows(sql).await?.iter().map(M::from_row).collect::<Result<_, _>>()?)
    }

    /// The rows of a read undecoded, for the reads whose rows carry more than one kind of record.
    async fn rows(&self, sql: Sql) -> StoreResult<Vec<PgRow>> {
        if self.scope.is_none() {
            if self.replicas.is_none() {
                let mut conn = self.primary.reader().await?;
                let rows = sql.query()?.fetch_all(&mut *conn).await;
                // Back in the pool now, not from a task spawned on drop: the next read finds it idle.
                conn.return_to_pool().await;
                return Ok(rows?);
            }
            return Ok(sql.query()?.fetch_all(&self.read_pool().await).await?);
        }
        let mut tx = self.read_tx().await?;
        let rows = sql.query()?.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// A transaction to read in (on a replica when one will do), naming the caller when it is limited.
    async fn read_tx(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        let mut tx = self.read_pool().await.begin().await?;
        if let Some(scope) = &self.scope {
            scope.apply(&mut tx).await?;
        }
        Ok(tx)
    }

    /// `all` for small frequent reads of one shape (live reads by cursor), which run best on a generic plan, without
    /// parallel workers and without JIT. A custom plan is planned anew over every chunk on every read; the cursor
    /// cannot exclude chunks by time, so the generic plan, planned once per connection, is the same plan at a
    /// fraction of the cost. A generic plan's cost is estimated without the cursor and can pass `jit_above_cost`: JIT
    /// then compiles on every read a query that runs in well under a millisecond. And each parallel worker is a new
    /// process that loads TimescaleDB and the chunk catalog, far more than a small indexed read costs.
    async fn all_serial<M: Row>(&self, sql: Sql) -> StoreResult<Vec<M>> {
        let mut tx = self.read_tx().await?;
        sqlx::raw_sql(
            "SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off; \
             SET LOCAL plan_cache_mode = force_generic_plan",
        )
        .execute(&mut *tx)
        .await?;
        let rows = sql.query_as()?.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }
}

/// A row type the store reads: decoded by sqlx, by column name, from the PostgreSQL row.
pub trait Row: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin {}
impl<M: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin> Row for M {}

/// SQL text with its bound values; `bind` returns the placeholder to write. Client values only ever travel as binds.
#[derive(Default)]
pub struct Sql {
    text: String,
    args: PgArguments,
    count: usize,
    /// The first value that could not be encoded: the query then fails with it, unsent.
    unencodable: Option<String>,
}

impl Sql {
    pub fn new(text: &str) -> Sql {
        Sql { text: text.to_owned(), ..Sql::default() }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub fn bind<'q, T: sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>>(&mut self, value: T) -> String {
        if let Err(err) = self.args.add(value) {
            self.unencodable.get_or_insert_with(|| err.to_string());
        }
        self.count += 1;
        format!("${}", self.count)
    }

    fn query_as<'q, M: Row>(self) -> StoreResult<sqlx::query::QueryAs<'q, Postgres, M, PgArguments>> {
        let (text, args) = self.parts()?;
        Ok(sqlx::query_as_with(text, args))
    }

    fn query<'q>(self) -> StoreResult<sqlx::query::Query<'q, Postgres, PgArguments>> {
        let (text, args) = self.parts()?;
        Ok(sqlx::query_with(text, args))
    }

    fn parts(self) -> StoreResult<(sqlx::AssertSqlSafe<String>, PgArguments)> {
        if let Some(err) = self.unencodable {
            tracing::debug!(%err, "a value could not be encoded for the database");
            return Err(StoreError::BadInput("a value cannot be stored (out of range)".into()));
        }
        // The text is ours; client values are only in `args`.
        Ok((sqlx::AssertSqlSafe(self.text), self.args))
    }
}

/// Escapes LIKE wildcards so search text matches literally.
pub fn like_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing() -> StoreResult<()> {
        Err(sqlx::Error::RowNotFound)?;
        Ok(())
    }

    #[test]
    fn a_query_error_names_the_question_mark_that_met_it() {
        let Err(StoreError::Database { at, .. }) = failing() else { panic!("expected a database error") };
        assert_eq!((at.file(), at.line()), (file!(), line!() - 7));
    }
}
