//! Webhooks: each session start and end POSTed as JSON to the URLs an operator configured (`--webhook-url`), for
//! systems that do not hold a `sessionUpdates` subscription open (chat alerts, CI, billing).
//!
//! Delivery follows the session change log, as `sessionUpdates` does: woken by session notifications, and every
//! `SAFETY_POLL` for what a lost notification did not announce. It is at least once: a failed POST is retried with
//! backoff, and the change-log mark up to which everything was delivered is stored, so a restarted server resumes
//! there (and may repeat the changes of an interrupted round: receivers deduplicate on `X-Flowtrace-Delivery`).
//! Changes are delivered in change-log order. One process delivers at a time: the one holding an advisory lock on a
//! connection of its own; another takes over when that connection ends.

use std::time::Duration;

use anyhow::Context as _;
use entity::session;
use hmac::{Hmac, Mac};
use reqwest::Url;
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::{Connection, PgConnection};
use tokio::sync::{broadcast, watch};

use crate::config::WebhookArgs;
use crate::domain::SessionStatus;
use crate::graphql::sessions::SessionSummary;
use crate::live::{Live, SAFETY_POLL, Signal, Topic, wait_for};
use crate::store::Store;
use crate::store::live::SessionChange;

/// Waits between the attempts of one POST; after the last, the delivery to that URL is given up (and logged).
const RETRY_DELAYS: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4), Duration::from_secs(8)];
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Key of the advisory lock held by the delivering process.
const LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('flowtrace-webhooks', 0))";

pub struct Webhooks {
    urls: Vec<Url>,
    secret: Option<String>,
    http: reqwest::Client,
}

impl Webhooks {
    /// `None` when no URL is configured; an error for a URL that is not http(s).
    pub fn from_args(args: &WebhookArgs) -> anyhow::Result<Option<Webhooks>> {
        if args.webhook_urls.is_empty() {
            return Ok(None);
        }
        let urls = args
            .webhook_urls
            .iter()
            .map(|raw| {
                let url = Url::parse(raw).with_context(|| format!("webhook URL {raw:?}"))?;
                anyhow::ensure!(matches!(url.scheme(), "http" | "https"), "webhook URL {raw:?} is not http(s)");
                Ok(url)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            // A POST redirected would arrive as a GET, or not at all: a receiver must answer 2xx itself.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flowtrace/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Webhooks { urls, secret: args.webhook_secret.clone(), http }))
    }

    /// Delivers until `stop` turns true. Called before the server accepts requests: on first use the starting mark
    /// is taken here, so every change made through this server is delivered.
    pub async fn start(self, store: Store, live: &Live, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        store.webhook_mark().await?;
        let signals = live.subscribe(Topic::All);
        tokio::spawn(self.run(store, signals, stop));
        Ok(())
    }

    async fn run(self, store: Store, mut signals: broadcast::Receiver<Signal>, mut stop: watch::Receiver<bool>) {
        tracing::info!(urls = self.urls.len(), "webhooks: session starts and ends are POSTed");
        loop {
            let led = tokio::select! {
                led = self.lead(&store, &mut signals) => led,
                _ = stop.wait_for(|s| *s) => return,
            };
            if let Err(err) = led {
                tracing::warn!(%err, "webhook delivery interrupted; resuming from the last delivered change");
            }
            tokio::select! {
                _ = tokio::time::sleep(SAFETY_POLL) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Delivers while this process holds the delivery lock; returns at once when another process holds it.
    async fn lead(&self, store: &Store, signals: &mut broadcast::Receiver<Signal>) -> anyhow::Result<()> {
        let mut lock = PgConnection::connect(store.url()).await?;
        let locked: bool = sqlx::query_scalar(LOCK).fetch_one(&mut lock).await?;
        if !locked {
            return Ok(());
        }
        let mut mark = store.webhook_mark().await?;
        loop {
            let (changes, next) = store.session_changes_since(&mark, None).await?;
            for change in &changes {
                self.deliver(store, change).await?;
            }
            if next != mark {
                store.save_webhook_mark(&next).await?;
                mark = next;
            }
            if wait_for(signals, |w| w.kind == "session").await.is_none() {
                return Ok(());
            }
            // The lock lives as long as its connection: if that ended, another process may deliver now.
            lock.ping().await?;
        }
    }

    /// POSTs one change to every URL. Only a database error is returned (the round is then repeated); a URL that
    /// keeps failing is given up for this change.
    async fn deliver(&self, store: &Store, change: &SessionChange) -> anyhow::Result<()> {
        // A session deleted by retention since has nothing left to tell.
        let Some(session) = store.session(&change.session_id).await? else { return Ok(()) };
        let status = change.status.or_else(|| SessionStatus::parse(&session.status)).unwrap_or(SessionStatus::Running);
        let event = event_name(status);
        let body = serde_json::to_vec(&json!({
            "event": event,
            "deliveryId": change.seq.to_string(),
            "session": session_json(&session),
        }))?;
        let signature = self.secret.as_deref().map(|secret| signature(secret, &body));
        for url in &self.urls {
            self.post(url, event, change.seq, &body, signature.as_deref()).await;
        }
        Ok(())
    }

    async fn post(&self, url: &Url, event: &str, delivery: i64, body: &[u8], signature: Option<&str>) {
        let mut last_error = String::new();
        for attempt in 0..=RETRY_DELAYS.len() {
            if attempt > 0 {
                tokio::time::sleep(RETRY_DELAYS[attempt - 1]).await;
            }
            let mut request = self
                .http
                .post(url.clone())
                .header("content-type", "application/json")
                .header("x-flowtrace-event", event)
                .header("x-flowtrace-delivery", delivery.to_string())
                .body(body.to_vec());
            if let Some(signature) = signature {
                request = request.header("x-flowtrace-signature", signature);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    metrics::counter!("flowtrace_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                    return;
                }
                Ok(response) => last_error = format!("HTTP {}", response.status()),
                Err(err) => last_error = err.to_string(),
            }
            metrics::counter!("flowtrace_webhook_attempts_failed_total").increment(1);
        }
        metrics::counter!("flowtrace_webhook_deliveries_total", "outcome" => "given_up").increment(1);
        tracing::error!(%url, event, delivery, error = %last_error, "webhook given up after {} attempts", RETRY_DELAYS.len() + 1);
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

/// The session as the GraphQL `Session` type shows it (same field names).
fn session_json(m: &session::Model) -> Value {
    json!({
        "id": m.id,
        "workflowId": m.workflow_id,
        "workflowVersionId": m.workflow_version_id,
        "workflowName": m.workflow_name,
        "userId": m.user_id,
        "startTime": m.start_time,
        "endTime": m.end_time,
        "status": m.status,
        "summary": SessionSummary::of(m),
        "metadata": m.metadata,
        "createdAt": m.created_at,
        "updatedAt": m.updated_at,
    })
}
