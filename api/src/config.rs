//! Command line and environment: every flag is also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use migration::Policies;

use crate::auth::AuthArgs;
use crate::limits::Limits;

/// What the code reads from the environment besides the flags' variables; `--help` ends with it.
pub const OTHER_VARIABLES: &str = "Also read: RUST_LOG (log filter, default `info,sqlx=warn,sea_orm=warn`). \
Every variable may also be set in a `.env` file in the working directory; the environment and flags win over it.";

#[derive(Parser, Debug)]
#[command(
    name = "flowtrace",
    version,
    about = "Store and GraphQL API for workflow execution traces",
    after_help = OTHER_VARIABLES
)]
pub struct Cli {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Log format.
    #[arg(long, env = "FLOWTRACE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Loads `.env` from the working directory (not its parents), if there is one. Variables already set are kept.
pub fn load_dotenv() -> anyhow::Result<()> {
    match dotenvy::from_path(".env") {
        Ok(()) => Ok(()),
        Err(err) if err.not_found() => Ok(()),
        Err(err) => Err(anyhow::anyhow!("reading .env in the working directory: {err}")),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Clone, Debug, Default)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. When unset, flowtrace runs its own embedded PostgreSQL under --data-dir.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Folder of the embedded PostgreSQL (default: the user's data folder, /var/lib/flowtrace for root).
    #[arg(long, env = "FLOWTRACE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Most pooled database connections.
    #[arg(long, env = "FLOWTRACE_DB_MAX_CONNECTIONS", default_value_t = 16, global = true)]
    pub db_max_connections: u32,
}

#[derive(Subcommand, Debug)]
#[expect(clippy::large_enum_variant, reason = "parsed once at startup")]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Apply or roll back the schema.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Write realistic demo data through the ingest path.
    Seed(SeedArgs),
    /// Copy sessions, traces and events from the replaced service's tables or another flowtrace database.
    Import(ImportArgs),
    /// Print the GraphQL SDL.
    Schema,
    /// Print the hash of an API key, for FLOWTRACE_API_KEYS (`write:<hash>` or `read:<hash>`).
    HashApiKey { key: String },
    /// Write sessions, traces and events of a time window to Parquet files, one per table and UTC day.
    Export(ExportArgs),
    /// Show or apply retention, compression and refresh policies.
    Policies {
        #[command(subcommand)]
        action: PoliciesAction,
        #[command(flatten)]
        policies: PolicyArgs,
    },
    /// The database's connection details.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Run psql on the database (starting the embedded one if needed); further arguments go to psql.
    Psql {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum DbAction {
    /// Print the connection URL (DATABASE_URL, or the embedded cluster's, with its password).
    Url,
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back the last `steps` migrations (all with --all).
    Down {
        #[arg(long, default_value_t = 1)]
        steps: u32,
        #[arg(long)]
        all: bool,
    },
    /// List migrations and whether each is applied.
    Status,
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum PoliciesAction {
    Show,
    Apply,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FLOWTRACE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Do not run migrations at startup.
    #[arg(long, env = "FLOWTRACE_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Largest request body in bytes.
    #[arg(long, env = "FLOWTRACE_BODY_LIMIT", default_value_t = 64 * 1024 * 1024)]
    pub body_limit: usize,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub policies: PolicyArgs,
    /// TimescaleDB: how often, in milliseconds, to look for late data below the continuous aggregates' watermark
    /// and refresh what it touched; 0 leaves it to the refresh policies.
    #[arg(long, env = "FLOWTRACE_LATE_DATA_REFRESH_MS", default_value_t = 2000)]
    pub late_data_refresh_ms: u64,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
    #[command(flatten)]
    pub replicas: ReplicaArgs,
    /// Origins allowed to call the API from a browser (CORS), comma-separated; `*` for any.
    #[arg(long, env = "FLOWTRACE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Refuse schema introspection.
    #[arg(long, env = "FLOWTRACE_NO_INTROSPECTION")]
    pub no_introspection: bool,
    /// Do not serve GraphiQL.
    #[arg(long, env = "FLOWTRACE_NO_GRAPHIQL")]
    pub no_graphiql: bool,
    /// Smallest response, in bytes, sent compressed (gzip, br or zstd, as the client accepts).
    #[arg(long, env = "FLOWTRACE_COMPRESSION_MIN_BYTES", default_value_t = 1024)]
    pub compression_min_bytes: u16,
    /// Never compress responses.
    #[arg(long, env = "FLOWTRACE_NO_COMPRESSION")]
    pub no_compression: bool,
    /// Most documents remembered for automatic persisted queries (0: switched off).
    #[arg(long, env = "FLOWTRACE_PERSISTED_QUERIES", default_value_t = 1000)]
    pub persisted_queries: usize,
    /// Run only the documents of this manifest (a JSON object of SHA-256 → document, or Apollo's persisted query
    /// manifest), sent by hash or as identical text.
    #[arg(long, env = "FLOWTRACE_TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<PathBuf>,
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            no_migrate: false,
            body_limit: 64 * 1024 * 1024,
            limits: Limits::default(),
            policies: PolicyArgs::default(),
            late_data_refresh_ms: 2000,
            auth: AuthArgs::default(),
            webhooks: WebhookArgs::default(),
            replicas: ReplicaArgs::default(),
            cors_origins: Vec::new(),
            no_introspection: false,
            no_graphiql: false,
            compression_min_bytes: 1024,
            no_compression: false,
            persisted_queries: 1000,
            trusted_documents: None,
        }
    }
}

/// Streaming replicas of the database to read from (see `store::replicas`).
#[derive(Args, Debug, Clone)]
pub struct ReplicaArgs {
    /// URLs of streaming replicas (hot standbys) of DATABASE_URL, comma-separated: queries, analytics and the
    /// catch-up reads of trace and event subscriptions read from them. Writes, LISTEN and webhooks stay on the
    /// primary.
    #[arg(
        long = "read-database-url",
        env = "FLOWTRACE_READ_DATABASE_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_database_urls: Vec<String>,
    /// Milliseconds a replica may fall behind the primary before it leaves the rotation (it comes back once within).
    #[arg(long, env = "FLOWTRACE_REPLICA_MAX_LAG_MS", default_value_t = 2000)]
    pub replica_max_lag_ms: u64,
    /// Milliseconds a read that must see a position waits for a replica to replay it before it reads on the primary.
    #[arg(long, env = "FLOWTRACE_REPLICA_WAIT_MS", default_value_t = 200)]
    pub replica_wait_ms: u64,
}

impl Default for ReplicaArgs {
    fn default() -> Self {
        ReplicaArgs { read_database_urls: Vec::new(), replica_max_lag_ms: 2000, replica_wait_ms: 200 }
    }
}

/// Session starts and ends POSTed to other systems (see `webhooks`).
#[derive(Args, Debug, Clone, Default)]
pub struct WebhookArgs {
    /// URLs (http or https) to POST each session start and end to as JSON, comma-separated.
    #[arg(long = "webhook-url", env = "FLOWTRACE_WEBHOOK_URLS", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,
    /// Signs each webhook body: header `X-Flowtrace-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[arg(long, env = "FLOWTRACE_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,
}

/// `flowtrace export` (see `crate::export`).
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Folder to write `<table>/<YYYY-MM-DD>.parquet` into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Start of the window, inclusive: RFC 3339 or YYYY-MM-DD (midnight UTC). Default: the first row.
    #[arg(long, value_parser = parse_time)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// End of the window, exclusive: RFC 3339 or YYYY-MM-DD (midnight UTC). Default: the last row.
    #[arg(long, value_parser = parse_time)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Export exactly the rows the next retention run drops: with each table's retention in force, or, given a
    /// DURATION (a PostgreSQL interval such as '30 days'), as if every table's retention were that.
    #[arg(long, num_args = 0..=1, value_name = "DURATION")]
    pub older_than: Option<Option<String>>,
    #[command(flatten)]
    pub policies: PolicyArgs,
}

#[derive(Args, Debug, Clone)]
pub struct SeedArgs {
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    #[arg(long, default_value_t = 200)]
    pub traces_per_session: usize,
}

/// `flowtrace import`: where from, which sessions, and the rules rows must keep (the ingest limits).
#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// PostgreSQL URL of the source: the replaced service's database, or another flowtrace database.
    #[arg(long, env = "FLOWTRACE_IMPORT_FROM")]
    pub from: String,
    /// Only sessions that started at or after this time (RFC 3339, or a date taken as midnight UTC).
    #[arg(long, env = "FLOWTRACE_IMPORT_SINCE", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Only sessions that started before this time.
    #[arg(long, env = "FLOWTRACE_IMPORT_UNTIL", value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Time zone of the source's `timestamp without time zone` columns.
    #[arg(long, env = "FLOWTRACE_IMPORT_SOURCE_TIMEZONE", default_value = "UTC")]
    pub source_timezone: String,
    /// Rows (sessions, traces, events) stored per transaction, roughly: a batch holds whole sessions.
    #[arg(long, env = "FLOWTRACE_IMPORT_BATCH_ROWS", default_value_t = 50_000)]
    pub batch_rows: usize,
    #[command(flatten)]
    pub limits: Limits,
    /// The retention the aggregates are refreshed within after the import (see `policies`).
    #[command(flatten)]
    pub policies: PolicyArgs,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{text:?} is neither an RFC 3339 time nor a YYYY-MM-DD date"))
}

/// Policy overrides; unset ones keep DESIGN §2's defaults. Values are PostgreSQL intervals (`'45 days'`).
#[derive(Args, Debug, Clone, Default)]
pub struct PolicyArgs {
    #[arg(long, env = "FLOWTRACE_SESSIONS_RETENTION")]
    pub sessions_retention: Option<String>,
    #[arg(long, env = "FLOWTRACE_TRACES_RETENTION")]
    pub traces_retention: Option<String>,
    #[arg(long, env = "FLOWTRACE_EVENTS_RETENTION")]
    pub events_retention: Option<String>,
    #[arg(long, env = "FLOWTRACE_SESSIONS_COMPRESS_AFTER")]
    pub sessions_compress_after: Option<String>,
    #[arg(long, env = "FLOWTRACE_TRACES_COMPRESS_AFTER")]
    pub traces_compress_after: Option<String>,
    #[arg(long, env = "FLOWTRACE_EVENTS_COMPRESS_AFTER")]
    pub events_compress_after: Option<String>,
    #[arg(long, env = "FLOWTRACE_SESSIONS_CHUNK")]
    pub sessions_chunk: Option<String>,
    #[arg(long, env = "FLOWTRACE_TRACES_CHUNK")]
    pub traces_chunk: Option<String>,
    #[arg(long, env = "FLOWTRACE_EVENTS_CHUNK")]
    pub events_chunk: Option<String>,
    /// How often continuous aggregates refresh.
    #[arg(long, env = "FLOWTRACE_REFRESH_EVERY")]
    pub refresh_every: Option<String>,
}

impl PolicyArgs {
    pub fn policies(&self) -> Policies {
        let mut p = Policies::default();
        for (table, retention, compress, chunk) in [
            ("flow_trace_sessions", &self.sessions_retention, &self.sessions_compress_after, &self.sessions_chunk),
            ("flow_traces", &self.traces_retention, &self.traces_compress_after, &self.traces_chunk),
            ("flow_trace_events", &self.events_retention, &self.events_compress_after, &self.events_chunk),
        ] {
            if let Some(t) = p.table_mut(table) {
                if let Some(v) = retention {
                    t.retain_for = v.clone();
                }
                if let Some(v) = compress {
                    t.compress_after = v.clone();
                }
                if let Some(v) = chunk {
                    t.chunk_interval = v.clone();
                }
            }
        }
        if let Some(v) = &self.refresh_every {
            p.refresh_every = v.clone();
        }
        p
    }
}
