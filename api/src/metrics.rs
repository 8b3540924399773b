//! Prometheus metrics. One process-wide recorder; `GET /metrics` renders it, with a HELP line for every name below.

use std::sync::OnceLock;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::store::ingest::Recorded;
use crate::store::{StoreError, StoreResult};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder once per process (tests start many servers in one process).
pub fn install() {
    HANDLE.get_or_init(|| match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => {
            describe();
            Some(handle)
        }
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

/// Counts one `recordTraces` / `recordEvents` batch (`kind`: traces or events): stored rows and duplicates of a
/// stored batch, or the batch refused with the reason.
pub fn ingest(kind: &'static str, result: &StoreResult<Recorded>) {
    match result {
        Ok(recorded) => {
            counter!("flowtrace_ingest_batches_total", "kind" => kind).increment(1);
            counter!("flowtrace_ingest_rows_total", "kind" => kind).increment(recorded.accepted.max(0) as u64);
            counter!("flowtrace_ingest_duplicates_total", "kind" => kind).increment(recorded.duplicates.max(0) as u64);
        }
        Err(err) => {
            let reason = match err {
                StoreError::NotFound(_) => "not_found",
                StoreError::BadInput(_) => "bad_input",
                StoreError::LimitExceeded(_) => "limit_exceeded",
                StoreError::Forbidden(_) => "forbidden",
                StoreError::Unavailable(_) => "database_unavailable",
                StoreError::Database { .. } | StoreError::Internal(_) => "internal",
            };
            counter!("flowtrace_ingest_refused_total", "kind" => kind, "reason" => reason).increment(1);
        }
    }
}

fn describe() {
    for (name, help) in [
        ("flowtrace_ingest_batches_total", "Batches of traces or events stored (kind)"),
        ("flowtrace_ingest_rows_total", "Traces or events stored (kind)"),
        ("flowtrace_ingest_duplicates_total", "Traces or events sent again with an id already stored, not written"),
        ("flowtrace_ingest_refused_total", "Batches refused whole (kind, reason)"),
        ("flowtrace_graphql_requests_total", "GraphQL operations answered (operation, outcome)"),
        ("flowtrace_graphql_errors_total", "GraphQL errors by extensions.code"),
        ("flowtrace_live_reads_total", "Reads of new rows made for live subscribers"),
        ("flowtrace_live_catchup_pages_total", "Pages read by subscriptions catching up from a cursor"),
        ("flowtrace_live_notifications_total", "pg_notify wake-ups received by the LISTEN connection"),
        ("flowtrace_live_listener_reconnects_total", "Reconnects of the LISTEN connection"),
        ("flowtrace_webhook_deliveries_total", "Webhook deliveries (outcome: delivered or given_up)"),
        ("flowtrace_webhook_attempts_failed_total", "Webhook POSTs that did not answer 2xx"),
        ("flowtrace_http_stream_too_slow_total", "SSE and multipart streams ended because their client did not read"),
        ("flowtrace_replica_reads_on_primary_total", "Reads that needed a position no replica had replayed in time"),
    ] {
        describe_counter!(name, help);
    }
    for (name, help) in [
        ("flowtrace_db_pool_connections", "Open pooled database connections"),
        ("flowtrace_db_pool_idle_connections", "Idle pooled database connections"),
        ("flowtrace_live_listener_connected", "1 while the LISTEN connection is up"),
        ("flowtrace_live_subscribers", "Open subscriptions (kind)"),
        ("flowtrace_ws_connections", "Open WebSocket connections"),
        ("flowtrace_sse_connections", "Open Server-Sent Events streams (graphql-sse)"),
        ("flowtrace_replica_in_rotation", "1 while reads go to the replica (replica)"),
        ("flowtrace_replica_lag_bytes", "Bytes of WAL the replica is behind the primary (replica)"),
    ] {
        describe_gauge!(name, help);
    }
    describe_histogram!("flowtrace_graphql_request_duration_seconds", Unit::Seconds, "GraphQL operation latency");
    // The ingest counters show from the first scrape, at zero, so rates work before the first batch.
    for kind in ["traces", "events"] {
        for name in
            ["flowtrace_ingest_batches_total", "flowtrace_ingest_rows_total", "flowtrace_ingest_duplicates_total"]
        {
            counter!(name, "kind" => kind).absolute(0);
        }
    }
}
