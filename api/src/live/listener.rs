//! The LISTEN connection: reconnects with backoff and asks every subscriber to catch up afterwards.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{Live, Signal};
use crate::store::notify::{CHANNEL, Wakeup};
use crate::store::replicas::Position;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub(super) async fn run(url: String, live: Live, mut stop: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let err = tokio::select! {
            err = listen(&url, &live, &mut backoff) => err,
            _ = stop.wait_for(|s| *s) => break,
        };
        metrics::counter!("flowtrace_live_listener_reconnects_total").increment(1);
        metrics::gauge!("flowtrace_live_listener_connected").set(0.0);
        tracing::warn!(%err, retry_in = ?backoff, "LISTEN connection lost; reconnecting");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    metrics::gauge!("flowtrace_live_listener_connected").set(0.0);
    tracing::info!("listener stopped");
}

/// Listens until the connection fails. Each (re)connection starts with a resync: notifications sent while nothing
/// listened are gone, and subscribers must read what they missed by cursor.
async fn listen(url: &str, live: &Live, backoff: &mut Duration) -> sqlx::Error {
    let mut listener = match PgListener::connect(url).await {
        Ok(listener) => listener,
        Err(err) => return err,
    };
    if let Err(err) = listener.listen(CHANNEL).await {
        return err;
    }
    *backoff = FIRST_BACKOFF;
    metrics::gauge!("flowtrace_live_listener_connected").set(1.0);
    tracing::info!(channel = CHANNEL, "listening for ingest notifications");
    // Subscribers re-read at a position after everything committed before now.
    if let Err(err) = note_position(&mut listener, live).await {
        return err;
    }
    live.dispatch(Signal::Resync);
    loop {
        let first = match listener.try_recv().await {
            Ok(Some(notification)) => notification,
            // The connection dropped: start over on a new one (and resync once it listens).
            Ok(None) => return sqlx::Error::Protocol("LISTEN connection closed".into()),
            Err(err) => return err,
        };
        let mut batch = vec![first];
        while let Some(more) = listener.next_buffered() {
            batch.push(more);
        }
        // These commits are at or before the WAL's end now: reads they wake must see that far.
        if let Err(err) = note_position(&mut listener, live).await {
            return err;
        }
        for notification in batch {
            metrics::counter!("flowtrace_live_notifications_total").increment(1);
            match Wakeup::decode(notification.payload()) {
                Ok(wakeup) => live.dispatch(Signal::Wakeup(wakeup)),
                Err(err) => tracing::warn!(%err, payload = notification.payload(), "unreadable notification"),
            }
        }
    }
}

/// Raises the position live reads must see to the end of the primary's WAL, when reads may go to replicas. A
/// notification is delivered only after its transaction committed, so its commit record is in the WAL by then.
async fn note_position(listener: &mut PgListener, live: &Live) -> Result<(), sqlx::Error> {
    if !live.tracks_positions() {
        return Ok(());
    }
    let text: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text").fetch_one(&mut *listener).await?;
    match text.parse::<Position>() {
        Ok(position) => live.saw(position),
        Err(err) => tracing::warn!(%err, "unreadable WAL position"),
    }
    Ok(())
}
