//! Prometheus metrics. One process-wide recorder; `GET /metrics` renders it.
//!
//! Names in use: `flowtrace_ingest_rows_total{kind}`, `flowtrace_ingest_batches_total{kind}`, and those added by
//! the HTTP, live and database layers next to the code they measure.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process (tests start many servers in one process).
pub fn install() {
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(err) => {
            tracing::warn!(%err, "metrics recorder not installed");
            None
        }
    });
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    HANDLE.get().and_then(Option::as_ref).map(PrometheusHandle::render).unwrap_or_default()
}
