//! The flowtrace benchmark: one run measures ingest, reads, live delivery, storage and memory against the physical
//! limits of the same machine (COPY, per-row INSERT, the same SQL without the API, a plain table), prints a table
//! and writes JSON. The server runs as its own process (the release `flowtrace` binary next to this one), so its
//! memory is measured alone.

mod analytics;
mod costs;
mod export;
mod import;
mod ingest;
mod live;
mod reads;
mod report;
mod scale;
mod server;
mod stalled;
mod state;

use std::path::PathBuf;

// The same allocator as the server, so the direct store calls it compares against are not handicapped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "flowtrace benchmark")]
pub struct Args {
    /// Small sizes that finish in under a minute (for CI: catches breakage, not performance).
    #[arg(long)]
    pub quick: bool,
    /// Traces sent through recordTraces.
    #[arg(long)]
    pub traces: Option<usize>,
    /// Traces in the read dataset.
    #[arg(long)]
    pub dataset_traces: Option<usize>,
    /// WebSocket subscribers in the live phase.
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Subscribers watching each session in the live phase: 1 sends every trace to one subscriber (deliveries =
    /// ingest rate); 10 fans each trace out to ten viewers (ten times the deliveries).
    #[arg(long, default_value_t = 1)]
    pub viewers_per_session: usize,
    /// Live phase subscribers use Server-Sent Events (graphql-sse) instead of WebSocket.
    #[arg(long)]
    pub sse: bool,
    /// Traces per second ingested during the live phase.
    #[arg(long)]
    pub live_rate: Option<usize>,
    /// Seconds the live phase ingests.
    #[arg(long)]
    pub live_seconds: Option<u64>,
    /// Use this PostgreSQL (a database `flowtrace_bench` is created on it) instead of an embedded cluster.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Traces in the replaced service's tables that the import phase imports.
    #[arg(long)]
    pub import_traces: Option<usize>,
    /// Phases to run, comma-separated: costs (what each read costs the database and the server), ingest, reads, live, slow (live delivery while a tenth of the subscribers
    /// have stopped reading), state (sessionState subscribers), import, export, scale (a second process reading from
    /// a streaming replica).
    #[arg(long, value_delimiter = ',', default_value = "costs,ingest,reads,live,slow,state,import,export,scale")]
    pub phases: Vec<String>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-results.json")]
    pub json: PathBuf,
}

/// Sizes after applying --quick and explicit overrides.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    pub quick: bool,
    pub traces: usize,
    pub per_row: usize,
    pub dataset: usize,
    pub query_runs: usize,
    pub subscribers: usize,
    pub viewers_per_session: usize,
    pub live_rate: usize,
    pub live_seconds: u64,
    pub import: usize,
    pub sse: bool,
}

impl Args {
    fn sizes(&self) -> Sizes {
        let (traces, per_row, dataset, runs, subs, rate, secs, import) = if self.quick {
            (20_000, 2_000, 100_000, 30, 20, 2_000, 2, 20_000)
        } else {
            (1_000_000, 20_000, 10_000_000, 100, 1_000, 10_000, 10, 1_000_000)
        };
        Sizes {
            quick: self.quick,
            traces: self.traces.unwrap_or(traces),
            per_row,
            dataset: self.dataset_traces.unwrap_or(dataset),
            query_runs: runs,
            subscribers: self.subscribers.unwrap_or(subs),
            viewers_per_session: self.viewers_per_session.max(1),
            live_rate: self.live_rate.unwrap_or(rate),
            live_seconds: self.live_seconds.unwrap_or(secs),
            import: self.import_traces.unwrap_or(import),
            sse: self.sse,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sizes = args.sizes();
    let mut report = report::Report::new(sizes);
    let server = server::Server::start(&args).await?;
    report.machine(&server).await?;

    let outcome = async {
        let wanted = |phase: &str| args.phases.iter().any(|p| p == phase);
        // First, on the empty store: the store its figures are compared on holds its dataset alone.
        if wanted("costs") {
            costs::run(&server, &sizes, &mut report).await?;
        }
        if wanted("ingest") {
            ingest::run(&server, &sizes, &mut report).await?;
        }
        if wanted("reads") {
            reads::run(&server, &sizes, &mut report).await?;
        }
        if wanted("live") {
            live::run(&server, &sizes, &mut report, false).await?;
        }
        if wanted("slow") {
            live::run(&server, &sizes, &mut report, true).await?;
        }
        if wanted("state") {
            state::run(&server, &sizes, &mut report).await?;
        }
        if wanted("import") {
            import::run(&server, &sizes, &mut report).await?;
        }
        if wanted("export") {
            export::run(&server, &sizes, &mut report).await?;
        }
        if wanted("scale") {
            scale::run(&server, &sizes, &mut report).await?;
        }
        anyhow::Ok(())
    }
    .await;
    server.stop().await;
    outcome?;
    report.print();
    report.write(&args.json)?;
    Ok(())
}
