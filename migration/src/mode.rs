//! Which storage the database offers: TimescaleDB, or plain PostgreSQL (and why).

use sea_orm_migration::sea_orm::{ConnectionTrait, DbErr, Statement};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageMode {
    TimescaleDb { version: String },
    Plain { reason: String },
}

impl StorageMode {
    pub fn is_timescaledb(&self) -> bool {
        matches!(self, StorageMode::TimescaleDb { .. })
    }

    /// The name `health` reports.
    pub fn name(&self) -> &'static str {
        match self {
            StorageMode::TimescaleDb { .. } => "TIMESCALEDB",
            StorageMode::Plain { .. } => "PLAIN",
        }
    }

    /// One line for the log: which mode runs and why.
    pub fn describe(&self) -> String {
        match self {
            StorageMode::TimescaleDb { version } => {
                format!("TimescaleDB mode (timescaledb {version})")
            }
            StorageMode::Plain { reason } => format!("plain PostgreSQL mode: {reason}"),
        }
    }
}

async fn query_string(conn: &impl ConnectionTrait, sql: &str) -> Result<Option<String>, DbErr> {
    let row = conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql)).await?;
    match row {
        Some(row) => row.try_get_by_index::<Option<String>>(0),
        None => Ok(None),
    }
}

/// The mode a database is in now: TimescaleDB once the extension is created in it.
pub async fn current(conn: &impl ConnectionTrait) -> Result<StorageMode, DbErr> {
    if let Some(version) =
        query_string(conn, "SELECT extversion::text FROM pg_extension WHERE extname = 'timescaledb'").await?
    {
        return Ok(StorageMode::TimescaleDb { version });
    }
    possible(conn).await.map(|mode| match mode {
        StorageMode::TimescaleDb { version } => StorageMode::Plain {
            reason: format!("timescaledb {version} can be used but was not created in this database"),
        },
        plain => plain,
    })
}

/// The mode this server could run: TimescaleDB when the extension is installed and preloaded.
pub async fn possible(conn: &impl ConnectionTrait) -> Result<StorageMode, DbErr> {
    let available =
        query_string(conn, "SELECT default_version::text FROM pg_available_extensions WHERE name = 'timescaledb'")
            .await?;
    let Some(version) = available else {
        return Ok(StorageMode::Plain { reason: "the timescaledb extension is not installed on this server".into() });
    };
    let preload = query_string(conn, "SELECT current_setting('shared_preload_libraries')").await?.unwrap_or_default();
    if !preload.split(',').any(|lib| lib.trim() == "timescaledb") {
        return Ok(StorageMode::Plain {
            reason: format!(
                "timescaledb {version} is installed but not in shared_preload_libraries (currently '{preload}')"
            ),
        });
    }
    Ok(StorageMode::TimescaleDb { version })
}

/// Whether the extension exists in this database: what every migration after the first one builds on.
pub(crate) async fn timescaledb_created(conn: &impl ConnectionTrait) -> Result<bool, DbErr> {
    Ok(current(conn).await?.is_timescaledb())
}
