//! `flowtrace import --from URL`: copies sessions, traces and events from the replaced service's tables or from another
//! flowtrace database into this one.
//!
//! Two steps. Reading: in one repeatable-read snapshot of the source, each table is streamed by `COPY (SELECT …) TO
//! STDOUT`, every row checked on the way (`rows`), and written by `COPY … FROM STDIN` into staging tables of one
//! target connection. Storing: the staged sessions, in order, one batch of whole sessions per transaction
//! (`store::import`). A run killed at any point leaves only whole batches behind; the next run reads everything again
//! and stores what is missing.

mod rows;
pub mod source;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::{Connection, PgConnection};

use crate::config::ImportArgs;
use crate::store::Store;
use crate::store::aggregate_refresh::refresh_locked;
use crate::store::import::{Stored, staged, store_batch};
use rows::{RowCheck, display, fields};
use source::{EVENTS, SESSIONS, Source, TRACES};

/// What a run did; `skipped` lists the refused rows as (table, source id, reason).
#[derive(Debug, Default)]
pub struct Outcome {
    pub stored: Stored,
    pub skipped: Vec<(&'static str, String, String)>,
}

/// Runs the import into `store` (already migrated) and prints its report; see the README for the output.
pub async fn run(store: &Store, args: &ImportArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut src = PgConnection::connect(&args.from).await.context("connecting to the source (--from)")?;
    let source = Source::detect(&mut src, &args.source_timezone).await?;
    println!("source: {} at {}", source.description, redact(&args.from));
    let mut dst = store.import_connection().await?;
    refuse_same_database(&mut src, &mut dst).await?;
    let mode = store.mode().await?;
    println!("target: {}", mode.describe());

    let progress = Progress::new();
    let mut reader = Reader {
        source: &source,
        args,
        sessions: HashMap::new(),
        rows: Vec::new(),
        seen: HashSet::new(),
        hashers: (RandomState::new(), RandomState::new()),
        outcome: Outcome::default(),
    };
    sqlx::raw_sql(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL TimeZone = 'UTC'; \
         SET LOCAL DateStyle = 'ISO, YMD'; SET LOCAL IntervalStyle = 'iso_8601'; SET LOCAL extra_float_digits = 1",
    )
    .execute(&mut src)
    .await?;
    let unstarted: Vec<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(source.sessions_without_start())).fetch_all(&mut src).await?;
    for id in unstarted {
        let column = source.source_name(&SESSIONS[5]);
        reader.outcome.skipped.push(("flow_trace_sessions", id, format!("{column} is missing")));
    }
    let mut tables = vec![
        (Table::Sessions, source.sessions_query(args.since, args.until)),
        (Table::Traces, source.rows_query("flow_traces", args.since, args.until)),
    ];
    if source.has_events() {
        tables.push((Table::Events, source.rows_query("flow_trace_events", args.since, args.until)));
    }
    for (table, query) in tables {
        let n = reader.pipe(&mut src, &mut dst, table, &query, &progress).await?;
        progress.log(&format!("read {}: {n} rows", table.name()));
    }
    sqlx::raw_sql("COMMIT").execute(&mut src).await?;
    src.close().await?;
    staged(&mut dst).await?;

    let batches = reader.batches(args.batch_rows.max(1));
    let total: u64 = reader.rows.iter().map(|&r| u64::from(r) + 1).sum();
    progress.storing(total);
    let mut stored = Stored::default();
    let mut done = 0u64;
    for (i, &(first, last)) in batches.iter().enumerate() {
        stored += store_batch(&mut dst, first as i32, last as i32).await?;
        done += (first..=last).map(|n| u64::from(reader.rows[n]) + 1).sum::<u64>();
        progress.stored(
            done,
            &format!(
                "batch {}/{}: sessions {}..{} of {}",
                i + 1,
                batches.len(),
                first + 1,
                last + 1,
                reader.rows.len()
            ),
        );
    }
    if mode.is_timescaledb() {
        for r in refresh_locked(&mut dst, &args.policies.policies(), true).await?.unwrap_or_default() {
            progress.log(&format!("refreshed {} from {} to {}", r.view, r.from.to_rfc3339(), r.to.to_rfc3339()));
        }
    }
    dst.close().await?;
    progress.finish();

    let mut outcome = reader.outcome;
    outcome.stored = stored;
    for (table, id, why) in &outcome.skipped {
        println!("skipped {table} {id}: {why}");
    }
    println!(
        "imported in {:.1} s: flow_trace_sessions {} new, {} brought up to date; flow_traces {} new; \
         flow_trace_events {} new; {} rows skipped",
        started.elapsed().as_secs_f64(),
        stored.sessions,
        stored.sessions_updated,
        stored.traces,
        stored.events,
        outcome.skipped.len()
    );
    Ok(outcome)
}

/// The source URL without its password, for the first line.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(the given URL)".into(),
    }
}

/// Importing a database into itself would only read what it writes.
async fn refuse_same_database(src: &mut PgConnection, dst: &mut PgConnection) -> anyhow::Result<()> {
    const WHO: &str = "SELECT current_database()::text || ' ' || pg_postmaster_start_time()::text || ' ' || \
                       COALESCE(inet_server_port(), 0)::text || ' ' || \
                       (SELECT oid::text FROM pg_database WHERE datname = current_database())";
    let a: String = sqlx::query_scalar(WHO).fetch_one(&mut *src).await?;
    let b: String = sqlx::query_scalar(WHO).fetch_one(&mut *dst).await?;
    anyhow::ensure!(a != b, "the source (--from) is this flowtrace's own database; nothing to import");
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Sessions,
    Traces,
    Events,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Sessions => "flow_trace_sessions",
            Table::Traces => "flow_traces",
            Table::Events => "flow_trace_events",
        }
    }
}

/// What reading learns: each accepted session's place (`n`, by its raw id), rows staged per session, and the refused.
struct Reader<'a> {
    source: &'a Source,
    args: &'a ImportArgs,
    sessions: HashMap<Box<[u8]>, u32>,
    /// Traces and events staged per session, by `n`.
    rows: Vec<u32>,
    /// (session, id) of every staged trace and event, hashed to 128 bits: an id is stored once per session.
    seen: HashSet<u128>,
    hashers: (RandomState, RandomState),
    outcome: Outcome,
}

impl Reader<'_> {
    /// Streams one table from the source into its staging table; returns how many rows the source sent.
    async fn pipe(
        &mut self,
        src: &mut PgConnection,
        dst: &mut PgConnection,
        table: Table,
        query: &str,
        progress: &Progress,
    ) -> anyhow::Result<u64> {
        let staging = match table {
            Table::Sessions => "import_sessions",
            Table::Traces => "import_traces",
            Table::Events => "import_events",
        };
        let mut input =
            src.copy_out_raw(query).await.with_context(|| format!("reading {} at the source", table.name()))?;
        let mut copy = dst.copy_in_raw(&format!("COPY {staging} FROM STDIN")).await?;
        let (mut carry, mut out, mut count) = (Vec::new(), Vec::with_capacity(1 << 20), 0u64);
        while let Some(bytes) = input.next().await {
            let bytes = bytes?;
            let mut chunk: &[u8] = &bytes;
            // COPY sends a row per message, but nothing promises it: rows are cut at newlines.
            while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
                let line = if carry.is_empty() {
                    &chunk[..end]
                } else {
                    carry.extend_from_slice(&chunk[..end]);
                    &carry[..]
                };
                self.row(table, line, &mut out);
                carry.clear();
                chunk = &chunk[end + 1..];
                count += 1;
                progress.read(count);
            }
            carry.extend_from_slice(chunk);
            if out.len() >= 1 << 20 {
                copy.send(std::mem::take(&mut out)).await?;
                out.reserve(1 << 20);
            }
        }
        copy.send(out).await?;
        copy.finish().await?;
        Ok(count)
    }

    /// Checks one row; appends it, after its session's `n`, to `out`, or records why not.
    fn row(&mut self, table: Table, line: &[u8], out: &mut Vec<u8>) {
        let columns = match table {
            Table::Sessions => SESSIONS,
            Table::Traces => TRACES,
            Table::Events => EVENTS,
        };
        let mut f = fields(line);
        let id = f.next().flatten();
        let session = f.next().flatten();
        let refuse = |outcome: &mut Outcome, why: String| outcome.skipped.push((table.name(), display(id), why));
        let check = RowCheck { limits: &self.args.limits, source: self.source, columns };
        if let Err(why) = check.check(line) {
            return refuse(&mut self.outcome, why);
        }
        let Some(id) = id else { return };
        let n = if table == Table::Sessions {
            if self.sessions.contains_key(id) {
                return refuse(&mut self.outcome, "appears more than once at the source".into());
            }
            let n = self.sessions.len() as u32;
            self.sessions.insert(id.into(), n);
            self.rows.push(0);
            n
        } else {
            let Some(&n) = session.and_then(|s| self.sessions.get(s)) else {
                return refuse(&mut self.outcome, format!("its session {} is not imported", display(session)));
            };
            let key = |h: &RandomState| h.hash_one((n, id));
            if !self.seen.insert(u128::from(key(&self.hashers.0)) << 64 | u128::from(key(&self.hashers.1))) {
                return refuse(&mut self.outcome, "appears more than once in its session at the source".into());
            }
            self.rows[n as usize] += 1;
            n
        };
        let _ = write!(out, "{n}\t");
        out.extend_from_slice(line);
        out.push(b'\n');
    }

    /// Cuts the staged sessions into runs of about `rows` rows each (a session is never split).
    fn batches(&self, rows: usize) -> Vec<(usize, usize)> {
        let mut batches = Vec::new();
        let (mut first, mut size) = (0, 0usize);
        for (n, &r) in self.rows.iter().enumerate() {
            size += r as usize + 1;
            if size >= rows {
                batches.push((first, n));
                (first, size) = (n + 1, 0);
            }
        }
        if first < self.rows.len() {
            batches.push((first, self.rows.len() - 1));
        }
        batches
    }
}

/// A progress bar with rows/s on a terminal; plain lines on stdout otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] reading {pos} rows ({per_sec}) {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, started: Instant::now() }
    }

    fn read(&self, count: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        } else if count.is_multiple_of(100_000) {
            self.line(&format!("reading: {count} rows of this table so far"));
        }
    }

    fn storing(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] {wide_bar} {pos}/{len} rows stored ({per_sec}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_length(total);
            bar.set_position(0);
            bar.reset_eta();
        }
    }

    fn stored(&self, done: u64, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                self.line(&format!("stored {what} ({done} rows, {:.0} rows/s since start)", done as f64 / secs));
            }
        }
    }

    fn log(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => self.line(line),
        }
    }

    fn line(&self, line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
