//! Webhooks: each session start and end POSTed as JSON to the URLs an operator configured (`--webhook-url`), for
//! systems that do not hold a `sessionUpdates` subscription open (chat alerts, CI, billing). What is sent is
//! `payload`'s.
//!
//! Delivery consumes the session-changes stream that `sessionUpdates` reads (`live::session_changes`), in change-log
//! order. It is at least once: a failed POST is retried with backoff, and the change-log mark up to which everything
//! was delivered is stored, so a restarted server resumes there (and may repeat the changes of an interrupted batch:
//! receivers deduplicate on `X-Flowtrace-Delivery`). One process delivers at a time: the one holding an advisory lock
//! on a connection of its own; another takes over when that connection ends.

mod payload;

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use reqwest::Url;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

pub use payload::signature;

use crate::config::WebhookArgs;
use crate::live::{Live, SAFETY_POLL, SessionUpdate};
use crate::store::Store;
use crate::store::live::Follow;

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
    pub async fn start(self, store: Store, live: Live, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        store.webhook_mark().await?;
        tokio::spawn(self.run(store, live, stop));
        Ok(())
    }

    async fn run(self, store: Store, live: Live, mut stop: watch::Receiver<bool>) {
        tracing::info!(urls = self.urls.len(), "webhooks: session starts and ends are POSTed");
        loop {
            let led = tokio::select! {
                led = self.lead(&store, &live) => led,
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
    async fn lead(&self, store: &Store, live: &Live) -> anyhow::Result<()> {
        let mut lock = PgConnection::connect(store.url()).await?;
        let locked: bool = sqlx::query_scalar(LOCK).fetch_one(&mut lock).await?;
        if !locked {
            return Ok(());
        }
        let mut saved = store.webhook_mark().await?;
        let mut changes = live.session_changes(store.clone(), Follow::All, saved.clone());
        let mut check_lock = tokio::time::interval(SAFETY_POLL);
        loop {
            tokio::select! {
                batch = changes.next() => {
                    let Some(batch) = batch else { return Ok(()) };
                    for update in &batch.updates {
                        self.deliver(update).await;
                    }
                    if batch.mark != saved {
                        store.save_webhook_mark(&batch.mark).await?;
                        saved = batch.mark;
                    }
                }
                // The lock lives as long as its connection: if that ended, another process may deliver now.
                _ = check_lock.tick() => lock.ping().await?,
            }
        }
    }

    /// POSTs one change to every URL; a URL that keeps failing is given up for this change.
    async fn deliver(&self, update: &SessionUpdate) {
        let body = payload::Body::of(update);
        let bytes = body.to_bytes();
        let signature = self.secret.as_deref().map(|secret| signature(secret, &bytes));
        for url in &self.urls {
            self.post(url, body.event, update.change.seq, &bytes, signature.as_deref()).await;
        }
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
