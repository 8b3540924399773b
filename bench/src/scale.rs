//! Past one machine: a second API process reading from a streaming replica of the embedded cluster (a hot standby
//! started from the same binaries). Read throughput at 8 concurrent clients through the first process (reads on the
//! primary) and through the second (reads on the replica), and live delivery through the second while its writes
//! go to the primary. On one machine the replica shares the primary's cores: this shows the path works and what it
//! costs, not the gain of a second machine.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

use crate::Sizes;
use crate::report::Report;
use crate::server::Server;

const CLIENTS: usize = 8;
const PAGE: &str = "query($s: ID!) { session(id: $s) { id traces(first: 20) { edges { node { id } } } } }";

pub async fn run(server: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let Some(replica) = server.start_replica().await? else {
        report.add("scale", "skipped", "needs the embedded cluster (no --database-url)".into(), "", None);
        return Ok(());
    };
    let second = server.another_process(&[("FLOWTRACE_READ_DATABASE_URL", replica)]).await?;
    let outcome = measure(server, &second, sizes, report).await;
    second.stop().await;
    outcome
}

async fn measure(first: &Server, second: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let health = second.gql("{ health { replicas { inRotation } } }", json!({})).await?;
        if health["health"]["replicas"][0]["inRotation"] == json!(true) {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the replica did not join the rotation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let session = session_with_traces(first).await?;
    let seconds = sizes.live_seconds.max(2);
    for (label, server) in [("primary", first), ("replica", second)] {
        let rate = throughput(server, &session, Duration::from_secs(seconds)).await?;
        report.add(
            "scale",
            &format!("session + 20 traces, reads/s on the {label} ({CLIENTS} clients)"),
            format!("{rate:.0}"),
            "",
            None,
        );
    }
    crate::live::measure(second, sizes, report, false, "scale-live").await
}

/// A session with traces to read: the read dataset's first, else one written here.
async fn session_with_traces(server: &Server) -> anyhow::Result<String> {
    let found = server.gql("{ sessions(first: 1) { nodes { id summary { totalTraces } } } }", json!({})).await?;
    let node = &found["sessions"]["nodes"][0];
    if node["summary"]["totalTraces"].as_i64().unwrap_or(0) >= 20 {
        return Ok(node["id"].as_str().unwrap_or_default().to_owned());
    }
    let started = server
        .gql(
            "mutation { startSession(input: { workflowId: \"bench-scale\", workflowName: \"scale\" }) { id } }",
            json!({}),
        )
        .await?;
    let id = started["startSession"]["id"].as_str().unwrap_or_default().to_owned();
    let traces: Vec<_> = (0..100)
        .map(|i| {
            json!({ "timestamp": chrono::Utc::now().to_rfc3339(), "status": "SUCCESS",
                         "source": { "nodeId": "a" }, "target": { "nodeId": format!("n{}", i % 5) } })
        })
        .collect();
    server
        .gql(
            "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }",
            json!({ "s": id, "t": traces }),
        )
        .await?;
    Ok(id)
}

/// Reads per second that `CLIENTS` clients, each sending its next read when the last is answered, get.
async fn throughput(server: &Server, session: &str, time: Duration) -> anyhow::Result<f64> {
    let until = Instant::now() + time;
    let counts = futures::stream::iter(0..CLIENTS)
        .map(|_| async move {
            let mut n = 0u64;
            while Instant::now() < until {
                server.read(PAGE, json!({ "s": session })).await?;
                n += 1;
            }
            anyhow::Ok(n)
        })
        .buffer_unordered(CLIENTS)
        .collect::<Vec<_>>()
        .await;
    let total: u64 = counts.into_iter().collect::<anyhow::Result<Vec<u64>>>()?.into_iter().sum();
    Ok(total as f64 / time.as_secs_f64())
}
