//! Live session state: `sessionState` subscribers, one per session, while traces are ingested along a chain of
//! nodes, so that each batch changes several nodes' states. Reports the state changes delivered and the server's CPU
//! per change (ingest included); every subscriber must end with the state `sessionStateAt` gives.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Sizes;
use crate::report::Report;
use crate::server::Server;

const RECORD: &str = "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }";
const STATE: &str = "subscription($s: ID!) { sessionState(sessionId: $s) { cursor
    state { nodes { nodeId inputCount } } node { nodeId changed inputCount } } }";
const NODES: usize = 10;
const TICK: Duration = Duration::from_millis(10);

/// Input counts by node as a subscriber holds them after `message`; returns whether it was a state message.
fn apply(counts: &mut [i64; NODES], message: &Value) -> bool {
    let data = &message["payload"]["data"]["sessionState"];
    if data.is_null() {
        return false;
    }
    let index =
        |v: &Value| v["nodeId"].as_str().and_then(|n| n.strip_prefix('n')).and_then(|n| n.parse::<usize>().ok());
    for n in
        data["state"]["nodes"].as_array().into_iter().flatten().chain(data["node"].as_object().map(|_| &data["node"]))
    {
        if let (Some(i), Some(c)) = (index(n), n["inputCount"].as_i64())
            && i < NODES
        {
            counts[i] = c;
        }
    }
    true
}

pub async fn run(server: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let sessions_n = (sizes.subscribers / 10).max(5);
    let mut sessions = Vec::new();
    for k in 0..sessions_n {
        let input = json!({ "workflowId": format!("bench-state-{k}"), "workflowName": "state" });
        let data = server
            .gql("mutation($i: StartSessionInput!) { startSession(input: $i) { id } }", json!({ "i": input }))
            .await?;
        sessions.push(data["startSession"]["id"].as_str().unwrap_or_default().to_owned());
    }
    let mut sockets = Vec::new();
    for s in &sessions {
        sockets.push(crate::live::subscribe(server, false, STATE, json!({ "s": s })).await?);
    }
    // Each tick sends one session a batch along the chain n0 → n1 → … → n9: every node's counts change.
    let rate = (sizes.live_rate / 10).max(100);
    let per_tick = NODES - 1;
    let ticks = ((rate as f64 * sizes.live_seconds as f64) / per_tick as f64).ceil() as usize;
    let every = Duration::from_secs_f64(sizes.live_seconds as f64 / ticks.max(1) as f64).max(TICK / 10);
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let (mut counts, mut messages) = ([0i64; NODES], 0usize);
                while let Ok(Some(Ok(v))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                    if apply(&mut counts, &v) {
                        messages += 1;
                    }
                }
                (counts, messages)
            })
        })
        .collect();
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let mut tick = tokio::time::interval(every);
    for b in 0..ticks {
        tick.tick().await;
        let traces: Vec<Value> = (0..per_tick)
            .map(|i| {
                json!({ "id": Uuid::new_v4(), "timestamp": chrono::Utc::now().to_rfc3339(), "status": "SUCCESS",
                    "source": { "nodeId": format!("n{i}") }, "target": { "nodeId": format!("n{}", i + 1) } })
            })
            .collect();
        server.gql(RECORD, json!({ "s": sessions[b % sessions.len()], "t": traces })).await?;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let mut delivered = 0usize;
    let mut wrong = 0usize;
    for (k, reader) in readers.into_iter().enumerate() {
        let (counts, messages) = reader.await?;
        delivered += messages;
        let batches = (ticks / sessions.len() + usize::from(k < ticks % sessions.len())) as i64;
        let want: Vec<i64> = (0..NODES).map(|i| if i == 0 { 0 } else { batches }).collect();
        if counts.to_vec() != want {
            wrong += 1;
            eprintln!("sessionState subscriber {k} holds {counts:?}, the store {want:?}");
        }
    }
    let cpu = cpu_before.zip(server.cpu_seconds()).map(|(before, after)| after - before);
    report.add(
        "state",
        &format!(
            "{} sessionState subscribers, {:.0} traces/s along {NODES} nodes for {:.0} s",
            sessions.len(),
            (ticks * per_tick) as f64 / ingest_secs,
            ingest_secs
        ),
        format!("{delivered} messages"),
        "",
        None,
    );
    report.add("state", "subscribers whose state differs from the store's", format!("{wrong}"), "0", Some(wrong == 0));
    if let Some(cpu) = cpu {
        report.add(
            "state",
            "server CPU per delivered state message (ingest included)",
            format!("{:.1} µs", cpu * 1e6 / delivered.max(1) as f64),
            "",
            None,
        );
    }
    Ok(())
}
