//! The results table and its JSON.

use serde::Serialize;
use serde_json::{Value, json};

use crate::Sizes;
use crate::server::Server;

#[derive(Serialize, Clone)]
pub struct Row {
    pub phase: String,
    pub measure: String,
    pub value: String,
    pub target: String,
    pub verdict: String,
}

pub struct Report {
    sizes: Sizes,
    machine: Value,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(sizes: Sizes) -> Report {
        Report { sizes, machine: Value::Null, rows: Vec::new() }
    }

    pub async fn machine(&mut self, server: &Server) -> anyhow::Result<()> {
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        });
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()));
        let health = server.store.health().await?;
        self.machine = json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpu,
            "memory_gib": mem_kib.map(|k| (k / 1024.0 / 1024.0 * 10.0).round() / 10.0),
            "postgres": health.postgres_version,
            "timescaledb": health.version,
            "mode": health.mode,
        });
        Ok(())
    }

    /// Adds a line; `verdict` is "met", "MISSED" or "" when there is no target.
    pub fn add(&mut self, phase: &str, measure: &str, value: String, target: &str, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        // Printed as it comes, so a long run shows progress and keeps what it measured if a later phase fails.
        eprintln!("[{phase}] {measure}: {value} {target} {verdict}");
        self.rows.push(Row {
            phase: phase.into(),
            measure: measure.into(),
            value,
            target: target.into(),
            verdict: verdict.into(),
        });
    }

    pub fn print(&self) {
        println!("\nflowtrace benchmark — {}", self.machine);
        println!("sizes: {}", serde_json::to_string(&self.sizes).unwrap_or_default());
        let widths = [8, 50, 26, 16, 7];
        let line = |cells: [&str; 5]| {
            let mut out = String::from("|");
            for (cell, width) in cells.iter().zip(widths) {
                out.push_str(&format!(" {cell:<width$} |"));
            }
            println!("{out}");
        };
        line(["phase", "measure", "value", "target", "verdict"]);
        println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for r in &self.rows {
            line([&r.phase, &r.measure, &r.value, &r.target, &r.verdict]);
        }
    }

    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let body = json!({ "machine": self.machine, "sizes": self.sizes, "results": self.rows });
        std::fs::write(path, serde_json::to_string_pretty(&body)?)?;
        println!("\nwrote {}", path.display());
        Ok(())
    }
}

/// p50 and p99 of durations in milliseconds.
pub fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    if ms.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}
