//! Domain values shared by the store, the API and webhooks. The enums are stored as their SCREAMING_CASE names in
//! text columns.

use async_graphql::SimpleObject;
use entity::session;
use serde::Serialize;

pub use entity::status::{EventType, SessionStatus, TraceStatus};

/// Whether PostgreSQL's `timestamptz` can hold `at`: from 4713-11-24 BC (its first Julian day) on. chrono reads times
/// from year -262144, and its last year (262143) is within PostgreSQL's (294276).
pub fn storable_time(at: &chrono::DateTime<chrono::Utc>) -> bool {
    chrono::NaiveDate::from_ymd_opt(-4713, 11, 24)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .is_some_and(|first| at.naive_utc() >= first)
}

/// Figures kept current by ingestion.
#[derive(SimpleObject, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    /// Traces stored for the session.
    pub total_traces: i64,
    /// Traces with status SUCCESS.
    pub success_count: i64,
    /// Traces with status ERROR.
    pub error_count: i64,
    /// Traces with status WARNING.
    pub warning_count: i64,
    /// Bytes of trace data (client-given sizes, else payload JSON length).
    pub total_data_size: i64,
    /// Mean trace duration in milliseconds over traces that reported one; null before any did.
    pub average_duration: Option<f64>,
}

impl SessionSummary {
    pub fn of(m: &session::Model) -> SessionSummary {
        SessionSummary {
            total_traces: m.total_traces,
            success_count: m.success_count,
            error_count: m.error_count,
            warning_count: m.warning_count,
            total_data_size: m.total_data_size,
            average_duration: (m.timed_traces > 0).then(|| m.total_duration / m.timed_traces as f64),
        }
    }
}
