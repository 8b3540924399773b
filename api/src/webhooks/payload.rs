//! What a webhook sends: a JSON body naming the change and the session as the GraphQL `Session` type shows it (same
//! field names), with `X-Flowtrace-Event`, `X-Flowtrace-Delivery` (the change's `seq`, for deduplication) and, with
//! a secret, `X-Flowtrace-Signature`.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value as Json;
use sha2::Sha256;

use crate::domain::{SessionStatus, SessionSummary};
use crate::live::SessionUpdate;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Body<'a> {
    /// `session.started`, `session.completed`, `session.failed` or `session.cancelled`.
    pub event: &'static str,
    pub delivery_id: String,
    pub session: SessionJson<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionJson<'a> {
    id: &'a str,
    workflow_id: &'a str,
    workflow_version_id: Option<&'a str>,
    workflow_name: &'a str,
    user_id: Option<&'a str>,
    start_time: DateTime<Utc>,
    end_time: Option<DateTime<Utc>>,
    status: SessionStatus,
    summary: SessionSummary,
    metadata: Option<&'a Json>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl<'a> Body<'a> {
    pub fn of(update: &'a SessionUpdate) -> Body<'a> {
        let m = &update.session;
        // The status the change set; the session's own for changes logged before the log recorded it.
        let status = update.change.status.unwrap_or(m.status);
        Body {
            event: event_name(status),
            delivery_id: update.change.seq.to_string(),
            session: SessionJson {
                id: &m.id,
                workflow_id: &m.workflow_id,
                workflow_version_id: m.workflow_version_id.as_deref(),
                workflow_name: &m.workflow_name,
                user_id: m.user_id.as_deref(),
                start_time: m.start_time,
                end_time: m.end_time,
                status: m.status,
                summary: SessionSummary::of(m),
                metadata: m.metadata.as_ref(),
                created_at: m.created_at,
                updated_at: m.updated_at,
            },
        }
    }

    #[expect(clippy::expect_used, reason = "strings, numbers, times and JSON values always serialise")]
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a webhook body serialises")
    }
}

fn event_name(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Running => "session.started",
        SessionStatus::Completed => "session.completed",
        SessionStatus::Failed => "session.failed",
        SessionStatus::Cancelled => "session.cancelled",
    }
}

/// `sha256=` and the hex HMAC-SHA256 of the body under the secret, as GitHub-style receivers verify it.
#[expect(clippy::expect_used, reason = "HMAC accepts a key of any length")]
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
