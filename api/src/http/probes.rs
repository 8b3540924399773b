//! Probes for monitoring: `/api/health/timescaledb`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::HttpState;
use crate::store::health::Health;

/// The `GET /api/health/timescaledb` body. The first five fields keep the replaced service's contract, which
/// monitoring compares as numbers: counts of hypertables and continuous aggregates, and a version string (`""` when
/// there is no TimescaleDB). The names and the rest come beside them.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HealthBody {
    connected: bool,
    version: String,
    hypertables: usize,
    compression_enabled: bool,
    continuous_aggregates: usize,
    hypertable_names: Vec<String>,
    continuous_aggregate_names: Vec<String>,
    postgres_version: Option<String>,
    mode: String,
    jobs_failing: i64,
    /// Why the database cannot be reached; only when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl From<Health> for HealthBody {
    fn from(h: Health) -> Self {
        HealthBody {
            connected: h.connected,
            version: h.version.unwrap_or_default(),
            hypertables: h.hypertables.len(),
            compression_enabled: h.compression_enabled,
            continuous_aggregates: h.continuous_aggregates.len(),
            hypertable_names: h.hypertables,
            continuous_aggregate_names: h.continuous_aggregates,
            postgres_version: h.postgres_version,
            mode: h.mode,
            jobs_failing: h.jobs_failing,
            reason: h.reason,
        }
    }
}

/// `GET /api/health/timescaledb`: 503 with the reason when the database cannot be reached (at once, see `probe`).
pub(super) async fn health(State(state): State<HttpState>) -> Response {
    match state.store.probe(state.store.health()).await {
        Ok(health) => axum::Json(HealthBody::from(health)).into_response(),
        Err(err) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(HealthBody::from(Health::unreachable(err.to_string()))))
                .into_response()
        }
    }
}

/// `GET /readyz`: the database answers and is migrated.
pub(super) async fn ready(State(state): State<HttpState>) -> Response {
    match state.store.probe(state.store.ready()).await {
        Ok(true) => (StatusCode::OK, axum::Json(serde_json::json!({ "ready": true }))).into_response(),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false, "reason": "migrations pending" })),
        )
            .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false, "reason": err.to_string() })),
        )
            .into_response(),
    }
}

/// `GET /metrics`: Prometheus text, with the pool's state read at scrape time.
pub(super) async fn metrics(State(state): State<HttpState>) -> String {
    let pool = state.store.pool();
    metrics::gauge!("flowtrace_db_pool_connections").set(pool.size() as f64);
    metrics::gauge!("flowtrace_db_pool_idle_connections").set(pool.num_idle() as f64);
    crate::metrics::render()
}
