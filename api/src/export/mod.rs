//! `flowtrace export`: the sessions, traces and events of a window as Parquet files, one per table and UTC day
//! (`DIR/<table>/<YYYY-MM-DD>.parquet`), to archive what retention will delete.
//!
//! Re-runs: a day whose file is complete (the whole day, ended, no session in it still running) is skipped. Any other
//! file (today, a day the window cut, a day with running sessions) is written again over the union of its window and
//! the new one: rows the database still keeps are read again (a session that ended since, a trace that arrived late);
//! rows older than the table's retention cutoff are copied from the earlier file, since retention may have deleted
//! them from the database.

pub mod parquet_file;

use std::path::{Path, PathBuf};
use std::pin::pin;

use anyhow::Context as _;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::StreamExt as _;
use migration::Policies;

use crate::config::ExportArgs;
use crate::store::Store;
use crate::store::archive::{ARCHIVE_TABLES, ArchiveColumn, ArchiveTable, Cell};
use parquet_file::{DayFile, FileInfo};

pub struct ExportOptions {
    pub out: PathBuf,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Export what the next retention run drops: `Some(None)` with each table's retention in force, `Some(Some(d))`
    /// as if every table's retention were `d` (a PostgreSQL interval).
    pub older_than: Option<Option<String>>,
    /// The retention in force in plain mode (TimescaleDB mode reads its retention jobs).
    pub policies: Policies,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableSummary {
    pub table: &'static str,
    pub rows: u64,
    pub files: u64,
    /// Days whose complete file an earlier run wrote.
    pub skipped: u64,
}

/// The `flowtrace export` command: the export, then its last line.
pub async fn run(store: &Store, args: ExportArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    store.wait_until_reachable(std::time::Duration::from_secs(30)).await.context("connecting to the database")?;
    let policies = args.policies.policies();
    policies.validate(store.orm()).await?;
    if let Some(Some(retain_for)) = &args.older_than {
        anyhow::ensure!(
            store.interval_is_positive(retain_for).await?,
            "--older-than '{retain_for}' is not a positive PostgreSQL interval"
        );
    }
    if let (Some(from), Some(to)) = (args.from, args.to) {
        anyhow::ensure!(from < to, "--from must be before --to");
    }
    let options = ExportOptions { out: args.out, from: args.from, to: args.to, older_than: args.older_than, policies };
    let summaries = export(store, &options).await?;
    println!("{}", summary_line(&summaries, started.elapsed()));
    Ok(())
}

/// Runs the export; prints one line per file written.
pub async fn export(store: &Store, options: &ExportOptions) -> anyhow::Result<Vec<TableSummary>> {
    let now = store.now().await?;
    let timescaledb = store.mode().await?.is_timescaledb();
    let mut summaries = Vec::new();
    for table in &ARCHIVE_TABLES {
        let mut summary = TableSummary { table: table.name, ..TableSummary::default() };
        let columns = store.archive_columns(table.name).await?;
        anyhow::ensure!(!columns.is_empty(), "table {} does not exist: run `flowtrace migrate up`", table.name);
        let retained_from = store.retention_cutoff(table, &options.policies, None, timescaledb).await?;
        let mut to = options.to;
        if let Some(retain_for) = &options.older_than {
            let cutoff = store.retention_cutoff(table, &options.policies, retain_for.as_deref(), timescaledb).await?;
            let Some(cutoff) = cutoff else {
                println!("{}: retention drops nothing now", table.name);
                summaries.push(summary);
                continue;
            };
            println!("{}: retention drops rows before {}", table.name, cutoff.to_rfc3339());
            to = Some(to.map_or(cutoff, |t| t.min(cutoff)));
        }
        let dir = options.out.join(table.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        remove_stale_temporaries(&dir)?;
        let Some((first, last)) = store.archive_span(table, options.from, to).await? else {
            summaries.push(summary);
            continue;
        };
        let mut day = first.date_naive();
        while day <= last.date_naive() {
            let (day_start, day_end) = day_bounds(day);
            let from = options.from.map_or(day_start, |f| f.max(day_start));
            let to = to.map_or(day_end, |t| t.min(day_end));
            let path = dir.join(format!("{day}.parquet"));
            let day_job = Day { table, columns: &columns, path: &path, day_start, day_end, now, retained_from };
            match day_job.export(store, from, to).await? {
                Outcome::Skipped => summary.skipped += 1,
                Outcome::Empty => {}
                Outcome::Written(rows) => {
                    summary.files += 1;
                    summary.rows += rows;
                }
            }
            day = day.succ_opt().context("date out of range")?;
        }
        summaries.push(summary);
    }
    Ok(summaries)
}

fn day_bounds(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    (start, start + Duration::days(1))
}

enum Outcome {
    Skipped,
    Empty,
    Written(u64),
}

struct Day<'a> {
    table: &'a ArchiveTable,
    columns: &'a [ArchiveColumn],
    path: &'a Path,
    day_start: DateTime<Utc>,
    day_end: DateTime<Utc>,
    now: DateTime<Utc>,
    /// Rows from here on are still in the database; older ones may be gone (`None`: none are gone).
    retained_from: Option<DateTime<Utc>>,
}

impl Day<'_> {
    async fn export(&self, store: &Store, from: DateTime<Utc>, to: DateTime<Utc>) -> anyhow::Result<Outcome> {
        let earlier = parquet_file::read_info(self.path)?;
        if earlier.is_some_and(|e| e.complete) {
            return Ok(Outcome::Skipped);
        }
        let (from, to) = match earlier {
            Some(e) => (from.min(e.from), to.max(e.to)),
            None => (from, to),
        };
        // The part of the earlier file that is kept rather than read again: what retention may have deleted.
        let kept = earlier.zip(self.retained_from).map(|(e, r)| (e.from, e.to.min(r))).filter(|(a, b)| a < b);
        let mut file = DayFile::create(self.path, self.table.name, self.columns)?;
        match kept {
            None => self.copy_rows(store, &mut file, from, to).await?,
            Some((keep_from, keep_to)) => {
                self.copy_rows(store, &mut file, from, keep_from).await?;
                let time = self.columns.iter().position(|c| c.name == self.table.time_column).context("time column")?;
                parquet_file::read_rows(self.path, self.columns, |row| match row.get(time) {
                    Some(Cell::Micros(t)) if *t < keep_to.timestamp_micros() => file.push(row),
                    _ => Ok(()),
                })?;
                self.copy_rows(store, &mut file, keep_to, to).await?;
            }
        }
        if file.rows == 0 && earlier.is_none() {
            return Ok(Outcome::Empty);
        }
        let whole_past_day = from == self.day_start && to == self.day_end && self.day_end <= self.now;
        let complete = whole_past_day && !store.archive_open_rows(self.table, from, to).await?;
        let rows = file.finish(FileInfo { from, to, complete })?;
        println!(
            "{}: {rows} rows{}",
            self.path.display(),
            if complete { "" } else { " (day not complete: written again by the next run)" }
        );
        Ok(Outcome::Written(rows))
    }

    async fn copy_rows(
        &self,
        store: &Store,
        file: &mut DayFile,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if from >= to {
            return Ok(());
        }
        let mut rows = pin!(store.archive_rows(self.table, self.columns, from, to));
        while let Some(row) = rows.next().await {
            file.push(row?)?;
        }
        Ok(())
    }
}

/// Temporary files of runs that died (their process is gone); a running export's own are left alone.
fn remove_stale_temporaries(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let pid = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")).and_then(|n| n.rsplit_once('.'));
        if let Some((_, pid)) = pid
            && pid.parse::<u32>().is_ok()
            && !Path::new("/proc").join(pid).exists()
        {
            std::fs::remove_file(dir.join(name))?;
        }
    }
    Ok(())
}

/// The last line: rows and files per table, and the time taken.
pub fn summary_line(summaries: &[TableSummary], elapsed: std::time::Duration) -> String {
    let tables: Vec<String> = summaries
        .iter()
        .map(|s| {
            let skipped = if s.skipped > 0 { format!(", {} complete days skipped", s.skipped) } else { String::new() };
            format!("{} {} rows in {} files{skipped}", s.table, s.rows, s.files)
        })
        .collect();
    let nothing = summaries.iter().all(|s| s.files == 0 && s.skipped == 0);
    format!(
        "exported{}: {} in {:.2} s",
        if nothing { " nothing (no rows in the window)" } else { "" },
        tables.join(", "),
        elapsed.as_secs_f64()
    )
}
