//! Read replicas: streaming standbys of the primary that serve reads. Writes, LISTEN and webhooks stay on the primary.
//!
//! A read may need to see everything committed up to a WAL `Position`: a subscriber's catch-up after a wake-up (the
//! listener tags wake-ups with a position at or after their commit), or a client reading its own write. It goes to a
//! replica that has replayed that far, waits a little for one, or reads on the primary. A replica that falls further
//! behind than the allowed lag, or does not answer, leaves the rotation until it has caught up.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::{Pools, StoreResult};

/// How often the primary's position and each replica's replay position are read.
const CHECK_EVERY: Duration = Duration::from_millis(200);
/// A replica that takes longer to say where it is counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two asks of a replica whether it has reached a position a read waits for.
const WAIT_STEP: Duration = Duration::from_millis(2);

/// A WAL position (`pg_lsn`), comparable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl FromStr for Position {
    type Err = String;

    /// PostgreSQL's text form: two hexadecimal halves, `16/B374D848`.
    fn from_str(text: &str) -> Result<Position, String> {
        let bad = || format!("{text:?} is not a WAL position (such as 16/B374D848)");
        let (high, low) = text.split_once('/').ok_or_else(bad)?;
        let hex =
            |part: &str| (!part.is_empty() && part.len() <= 8).then(|| u32::from_str_radix(part, 16).ok()).flatten();
        match (hex(high), hex(low)) {
            (Some(high), Some(low)) => Ok(Position((u64::from(high) << 32) | u64::from(low))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What the server last saw of a replica.
#[derive(Clone, Debug, Default)]
pub struct ReplicaState {
    pub in_rotation: bool,
    /// The WAL it has replayed.
    pub replay: Option<Position>,
    /// How far its replay is behind the primary's WAL, in bytes.
    pub lag_bytes: Option<u64>,
    /// Why it is out of the rotation, when it did not answer or is not a standby.
    pub error: Option<String>,
}

struct Replica {
    /// Host, port and database: the URL without credentials.
    name: String,
    pools: Pools,
    state: RwLock<ReplicaState>,
    /// The furthest replay position seen; reads waiting for a position watch it.
    replayed: watch::Sender<Position>,
    /// Reads waiting for this replica to replay further: while there are any, one task asks it often.
    waiting: AtomicUsize,
    wake: Notify,
}

impl Replica {
    fn state(&self) -> ReplicaState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ReplicaState)) {
        f(&mut self.state.write().unwrap_or_else(|e| e.into_inner()));
    }

    fn saw(&self, replay: Position) {
        self.replayed.send_if_modified(|held| {
            let further = replay > *held;
            *held = (*held).max(replay);
            further
        });
    }

    /// Asks where its replay is every `WAIT_STEP` while reads wait for it, for all of them at once.
    async fn follow_replay(&self) {
        loop {
            if self.waiting.load(Ordering::Acquire) == 0 {
                let woken = self.wake.notified();
                if self.waiting.load(Ordering::Acquire) == 0 {
                    woken.await;
                }
            }
            if let Ok(replay) = self.replay().await {
                self.saw(replay);
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// Waits until it has replayed `floor`, for at most `wait`.
    async fn reached(&self, floor: Position, wait: Duration) -> bool {
        let mut replayed = self.replayed.subscribe();
        self.waiting.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
        let reached = tokio::time::timeout(wait, replayed.wait_for(|p| *p >= floor)).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        matches!(reached, Ok(Ok(_)))
    }

    /// Where its replay is now.
    async fn replay(&self) -> Result<Position, String> {
        let read = sqlx::query_scalar::<_, Option<String>>("SELECT pg_last_wal_replay_lsn()::text")
            .fetch_one(&self.pools.plain);
        match tokio::time::timeout(CHECK_TIMEOUT, read).await {
            Err(_) => Err("it did not answer in time".into()),
            Ok(Err(err)) => Err(format!("it cannot be reached ({})", super::StoreError::from(err))),
            Ok(Ok(None)) => Err("it is not a standby (pg_last_wal_replay_lsn() is null)".into()),
            Ok(Ok(Some(text))) => text.parse(),
        }
    }
}

pub struct Replicas {
    members: Vec<Replica>,
    next: AtomicUsize,
    max_lag: Duration,
    wait: Duration,
}

/// The URL without user and password, for logs, metrics and `health`.
fn display_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('?').next().unwrap_or(rest).to_owned()
}

impl Replicas {
    /// Pools for each replica URL (connected lazily), none in the rotation until checked.
    pub fn connect(urls: &[String], max_connections: u32, max_lag: Duration, wait: Duration) -> StoreResult<Replicas> {
        let members = urls
            .iter()
            .map(|url| {
                Ok(Replica {
                    name: display_name(url),
                    pools: Pools::connect_lazy(url, max_connections)?,
                    state: RwLock::default(),
                    replayed: watch::Sender::new(Position::default()),
                    waiting: AtomicUsize::new(0),
                    wake: Notify::new(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Replicas { members, next: AtomicUsize::new(0), max_lag, wait })
    }

    /// Each replica by name, as last seen.
    pub fn states(&self) -> Vec<(String, ReplicaState)> {
        self.members.iter().map(|r| (r.name.clone(), r.state())).collect()
    }

    /// A pool to read from (the scoped one when `scoped`): a replica in the rotation that has replayed `floor`,
    /// taking turns; waiting up to the configured time for one to reach `floor`. `None`: read on the primary.
    pub async fn pick(&self, floor: Option<Position>, scoped: bool) -> Option<PgPool> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let order: Vec<&Replica> = (0..n).map(|i| &self.members[(first + i) % n]).collect();
        let pool = |r: &Replica| if scoped { r.pools.scoped.clone() } else { r.pools.plain.clone() };
        let in_rotation: Vec<&Replica> = order.into_iter().filter(|r| r.state().in_rotation).collect();
        let Some(floor) = floor else { return in_rotation.first().map(|r| pool(r)) };
        if let Some(r) = in_rotation.iter().find(|r| *r.replayed.borrow() >= floor) {
            return Some(pool(r));
        }
        if !in_rotation.is_empty() {
            let waits =
                in_rotation.iter().map(|r| Box::pin(async move { r.reached(floor, self.wait).await.then_some(*r) }));
            let mut waits: Vec<_> = waits.collect();
            while !waits.is_empty() {
                let (reached, _, rest) = futures::future::select_all(waits).await;
                if let Some(r) = reached {
                    return Some(pool(r));
                }
                waits = rest;
            }
        }
        metrics::counter!("flowtrace_replica_reads_on_primary_total").increment(1);
        None
    }

    /// Checks every replica against the primary until `stop`: in the rotation while its replay is no further behind
    /// than the primary's position `max_lag` ago.
    pub async fn monitor(self: Arc<Self>, primary: PgPool, mut stop: watch::Receiver<bool>) {
        for i in 0..self.members.len() {
            let (replicas, mut stop) = (self.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    () = replicas.members[i].follow_replay() => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            });
        }
        // The primary's recent positions, oldest first: where it was `max_lag` ago is the bar.
        let mut history: VecDeque<(Instant, Position)> = VecDeque::new();
        loop {
            let now = Instant::now();
            let position = sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text")
                .fetch_one(&primary)
                .await
                .ok()
                .and_then(|p| p.parse::<Position>().ok());
            if let Some(position) = position {
                history.push_back((now, position));
            }
            while history.len() > 1 && history.get(1).is_some_and(|(at, _)| now.duration_since(*at) >= self.max_lag) {
                history.pop_front();
            }
            let bar = history.front().map(|(_, p)| *p);
            for replica in &self.members {
                let replay = replica.replay().await;
                replica.update(|s| {
                    match &replay {
                        Ok(replay) => {
                            replica.saw(*replay);
                            s.replay = Some(*replay);
                            s.lag_bytes = position.map(|p| p.0.saturating_sub(replay.0));
                            s.in_rotation = bar.is_some_and(|bar| *replay >= bar);
                            s.error = None;
                        }
                        Err(why) => {
                            s.in_rotation = false;
                            s.error = Some(why.clone());
                        }
                    }
                    let name = replica.name.clone();
                    metrics::gauge!("flowtrace_replica_in_rotation", "replica" => name.clone()).set(if s.in_rotation {
                        1.0
                    } else {
                        0.0
                    });
                    if let Some(lag) = s.lag_bytes {
                        metrics::gauge!("flowtrace_replica_lag_bytes", "replica" => name).set(lag as f64);
                    }
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    }

    pub async fn close(&self) {
        for replica in &self.members {
            replica.pools.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_print_as_postgresql_writes_them() {
        let p: Position = "16/B374D848".parse().expect("a position");
        assert_eq!(p, Position((0x16 << 32) | 0xB374_D848));
        assert_eq!(p.to_string(), "16/B374D848");
        assert!("0/10".parse::<Position>().expect("small") < "1/0".parse::<Position>().expect("next segment"));
        for bad in ["", "16", "/1", "x/1", "1/123456789", "-1/2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn replica_names_carry_no_credentials() {
        assert_eq!(
            display_name("postgres://u:secret@db-replica:5433/flowtrace?sslmode=require"),
            "db-replica:5433/flowtrace"
        );
    }
}
