//! The node status rules (the `NodeStatus` description) against an oracle: a reference that recomputes every node's
//! state by scanning all of a session's rows up to an instant, compared with `sessionStateAt` on randomised sessions
//! (random graphs, batches sent out of time order, ties at one instant, failed traces, lifecycle and log events, an
//! ended session) at many instants, in both storage modes.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{RECORD, RECORD_EVENTS, session, t0};
use crate::harness::{Kind, TestApp, try_test_db};

const STATE: &str = "query($s: ID!, $at: DateTime!) { sessionStateAt(sessionId: $s, at: $at) {
    sessionStatus nodes { nodeId status inputCount outputCount } } }";
const COMPLETE: &str = "mutation($id: ID!, $s: SessionStatus!, $end: DateTime) { completeSession(id: $id, status: $s, endTime: $end) { id } }";

/// A deterministic generator (xorshift), so a failure names a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One row as the oracle sees it; `seq` is its commit order among rows of its kind.
struct Trace {
    at: DateTime<Utc>,
    seq: usize,
    failed: bool,
    source: String,
    target: String,
}

struct Event {
    at: DateTime<Utc>,
    seq: usize,
    node: String,
    kind: &'static str,
}

/// The rules, recomputed from every row up to `at`: node id → (status, inputs, outputs).
fn oracle(traces: &[Trace], events: &[Event], ended: Option<(DateTime<Utc>, &str)>, at: DateTime<Utc>) -> Value {
    let mut nodes: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for t in traces.iter().filter(|t| t.at <= at) {
        nodes.entry(&t.target).or_default().0 += 1;
        nodes.entry(&t.source).or_default().1 += 1;
    }
    for e in events.iter().filter(|e| e.at <= at) {
        nodes.entry(&e.node).or_default();
    }
    let session_status = match ended {
        Some((end, status)) if end <= at => status,
        _ => "RUNNING",
    };
    let list: Vec<Value> = nodes
        .into_iter()
        .map(|(node, (inputs, outputs))| {
            let lifecycle = events
                .iter()
                .filter(|e| e.at <= at && e.node == node && matches!(e.kind, "START" | "COMPLETE" | "ERROR"))
                .max_by_key(|e| (e.at, e.kind == "ERROR", e.seq));
            let last_in = traces.iter().filter(|t| t.at <= at && t.target == node).max_by_key(|t| (t.at, t.seq));
            let last_out = traces.iter().filter(|t| t.at <= at && t.source == node).max_by_key(|t| (t.at, t.seq));
            let mut status = match (lifecycle, last_in, last_out) {
                (Some(e), _, _) => match e.kind {
                    "START" => "RUNNING",
                    "COMPLETE" => "COMPLETED",
                    _ => "FAILED",
                },
                (None, _, Some(out)) if out.failed => "FAILED",
                (None, Some(i), Some(o)) if (i.at, i.seq) > (o.at, o.seq) => "RUNNING",
                (None, Some(_), None) => "RUNNING",
                (None, _, Some(_)) => "COMPLETED",
                (None, None, None) => "IDLE",
            };
            if status == "RUNNING" {
                status = match session_status {
                    "RUNNING" => "RUNNING",
                    "COMPLETED" => "COMPLETED",
                    other => other,
                };
            }
            json!({ "nodeId": node, "status": status, "inputCount": inputs, "outputCount": outputs })
        })
        .collect();
    json!({ "sessionStatus": session_status, "nodes": list })
}

/// Times on a coarse grid over one minute, so that several rows often share an instant.
fn instant(rng: &mut Rng) -> DateTime<Utc> {
    t0() + Duration::milliseconds(500 * rng.below(120) as i64)
}

async fn check_random_session(app: &TestApp, seed: u64) {
    let mut rng = Rng(seed);
    let sid: Uuid = session(app, &format!("oracle-{seed}"), 0).await;
    let node_count = 3 + rng.below(5);
    let name = |i: u64| format!("n{i}");
    // Batches of traces and events, each in random time order, sent in an order unrelated to time.
    let (mut traces, mut events) = (Vec::new(), Vec::new());
    for _ in 0..(4 + rng.below(5)) {
        let mut batch: Vec<Trace> = (0..(1 + rng.below(8)))
            .map(|_| {
                let source = rng.below(node_count);
                let target = (source + 1 + rng.below(node_count - 1)) % node_count;
                Trace {
                    at: instant(&mut rng),
                    seq: 0,
                    failed: rng.below(5) == 0,
                    source: name(source),
                    target: name(target),
                }
            })
            .collect();
        let body: Vec<Value> = batch
            .iter()
            .map(|t| {
                json!({ "id": Uuid::new_v4(), "timestamp": t.at.to_rfc3339(), "status": if t.failed { "ERROR" } else { "SUCCESS" },
                        "source": { "nodeId": t.source }, "target": { "nodeId": t.target } })
            })
            .collect();
        app.ok(RECORD, json!({ "s": sid, "t": body })).await;
        // The server draws `seq` in time order within a batch, keeping the sent order for equal times.
        batch.sort_by_key(|t| t.at);
        for mut t in batch {
            t.seq = traces.len();
            traces.push(t);
        }

        let kinds = ["START", "COMPLETE", "ERROR", "LOG"];
        // Events on a coarser grid still: a node often reports two lifecycle events at one instant.
        let mut batch: Vec<Event> = (0..rng.below(8))
            .map(|_| Event {
                at: t0() + Duration::seconds(5 * rng.below(12) as i64),
                seq: 0,
                node: name(rng.below(node_count + 1)),
                kind: kinds[rng.below(4) as usize],
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        let body: Vec<Value> = batch
            .iter()
            .map(|e| json!({ "id": Uuid::new_v4(), "nodeId": e.node, "eventType": e.kind, "timestamp": e.at.to_rfc3339() }))
            .collect();
        app.ok(RECORD_EVENTS, json!({ "s": sid, "e": body })).await;
        batch.sort_by_key(|e| e.at);
        for mut e in batch {
            e.seq = events.len();
            events.push(e);
        }
    }
    let outcome = ["COMPLETED", "FAILED", "CANCELLED"][rng.below(3) as usize];
    let end = t0() + Duration::milliseconds(500 * (60 + rng.below(80)) as i64);
    app.ok(COMPLETE, json!({ "id": sid, "s": outcome, "end": end.to_rfc3339() })).await;

    // Every row's instant, a moment either side of it, the end, and random instants.
    let mut instants: Vec<DateTime<Utc>> = traces.iter().map(|t| t.at).chain(events.iter().map(|e| e.at)).collect();
    instants.extend(
        instants.clone().into_iter().flat_map(|i| [i - Duration::milliseconds(1), i + Duration::milliseconds(1)]),
    );
    instants.extend([end, end - Duration::milliseconds(1), end + Duration::seconds(5)]);
    instants.extend((0..10).map(|_| instant(&mut rng) + Duration::seconds(30)));
    instants.sort();
    instants.dedup();
    for at in instants {
        let got = app.ok(STATE, json!({ "s": sid, "at": at.to_rfc3339() })).await["sessionStateAt"].clone();
        // Before its start the session has no state at all.
        let want = if at < t0() { Value::Null } else { oracle(&traces, &events, Some((end, outcome)), at) };
        assert_eq!(got, want, "seed {seed}, at {at}");
    }
}

async fn check_random_sessions(app: &TestApp) {
    for seed in [1, 7, 42, 1234, 99_991, 31_337] {
        check_random_session(app, seed).await;
    }
}

#[tokio::test]
async fn node_status_follows_the_written_rules_on_random_sessions_in_both_modes() {
    let app = TestApp::start(Kind::Default).await;
    check_random_sessions(&app).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check_random_sessions(&TestApp::with_db(db, Default::default()).await).await;
    }
}
