use clap::Parser;
use flowtrace::config::{Cli, LogFormat};
use flowtrace::log_limit::RateLimit;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer};

// Building GraphQL results allocates per field; glibc's malloc and free were a third of the server's CPU on a page of
// traces (perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match cli.log_format {
        LogFormat::Json => logs.json().boxed(),
        LogFormat::Text => logs.boxed(),
    };
    tracing_subscriber::registry().with(logs.with_filter(filter).with_filter(RateLimit::default())).init();
    flowtrace::cli::run(cli).await
}
