//! Live delivery: commit → client latency and loss with many WebSocket subscribers while traces are ingested at a
//! fixed rate. Each session is watched by `--viewers-per-session` subscribers (one workflow per session); the writer
//! spreads its batches over those sessions. Only batches the server acknowledged (no GraphQL error) count as expected.
//!
//! The `slow` phase runs the same measurement while a further tenth of all subscribers have stopped reading: they
//! follow a session with a large backlog over sockets with small receive buffers and never read (see `stalled`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use crate::Sizes;
use crate::report::{Report, percentiles};
use crate::server::Server;

const TICK: Duration = Duration::from_millis(10);
const RECORD: &str = "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }";

/// A subscriber's messages, in the graphql-transport-ws shape (`{type, payload}`) whatever the transport.
pub type Messages = std::pin::Pin<Box<dyn futures::Stream<Item = anyhow::Result<Value>> + Send>>;

const QUERY: &str = "subscription($s: ID) { traces(sessionId: $s) { node { id data { preview } } } }";

/// Starts a subscription over WebSocket (graphql-transport-ws) or Server-Sent Events (graphql-sse, distinct
/// connections).
pub async fn subscribe(server: &Server, sse: bool, query: &str, variables: Value) -> anyhow::Result<Messages> {
    if sse {
        let res = server
            .http
            .post(format!("{}/graphql", server.base))
            .header("Accept", "text/event-stream")
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await?
            .error_for_status()?;
        // Each event is `event: next` then `data: {json}` and a blank line; the data is the execution result.
        // Keep-alive comments and the closing `complete` event carry no data.
        let events = futures::stream::unfold((res, Vec::<u8>::new()), |(mut res, mut buf)| async move {
            loop {
                if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&event);
                    let data = text.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
                    if let Some(payload) = data.and_then(|d| serde_json::from_str::<Value>(d).ok()) {
                        return Some((Ok(json!({ "type": "next", "payload": payload })), (res, buf)));
                    }
                    continue;
                }
                match res.chunk().await {
                    Ok(Some(bytes)) => buf.extend_from_slice(&bytes),
                    Ok(None) | Err(_) => return None,
                }
            }
        });
        return Ok(Box::pin(events));
    }
    let ws_url = format!("{}/graphql", server.base.replacen("http", "ws", 1));
    let mut request = ws_url.as_str().into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    ws.send(Message::Text(json!({ "type": "connection_init", "payload": {} }).to_string().into())).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(text) = msg?
            && text.contains("connection_ack")
        {
            break;
        }
    }
    let subscribe = json!({ "type": "subscribe", "id": "1", "payload": { "query": query, "variables": variables } });
    ws.send(Message::Text(subscribe.to_string().into())).await?;
    let messages = ws.filter_map(|msg| async move {
        match msg {
            Ok(Message::Text(text)) => serde_json::from_str::<Value>(&text).ok().map(Ok),
            Ok(_) => None,
            Err(err) => Some(Err(err.into())),
        }
    });
    Ok(Box::pin(messages))
}

/// Runs the measurement and reports it under "live" or "slow"; `slow` adds the stalled subscribers.
pub async fn run(server: &Server, sizes: &Sizes, report: &mut Report, slow: bool) -> anyhow::Result<()> {
    let section = match (slow, sizes.sse) {
        (true, _) => "slow",
        (false, false) => "live",
        (false, true) => "live-sse",
    };
    measure(server, sizes, report, slow, section).await
}

/// The measurement, reported under `section`.
pub async fn measure(
    server: &Server,
    sizes: &Sizes,
    report: &mut Report,
    slow: bool,
    section: &str,
) -> anyhow::Result<()> {
    let stalled = if slow { crate::stalled::connect(server, sizes.subscribers.div_ceil(9)).await? } else { Vec::new() };
    let session_count = sizes.subscribers.div_ceil(sizes.viewers_per_session).max(1);
    let mut sessions = Vec::new();
    for _ in 0..session_count {
        let data = server
            .gql(
                "mutation($i: StartSessionInput!) { startSession(input: $i) { id } }",
                json!({ "i": { "workflowId": format!("bench-live-{}", sessions.len()), "workflowName": "live" } }),
            )
            .await?;
        sessions.push(data["startSession"]["id"].as_str().unwrap_or_default().to_owned());
    }
    server.reset_peak_rss();

    // Every subscriber connects and subscribes before ingest starts.
    let mut subscribers = Vec::new();
    for k in 0..sizes.subscribers {
        let stream = subscribe(server, sizes.sse, QUERY, json!({ "s": sessions[k % session_count] })).await?;
        subscribers.push((k % session_count, stream));
    }
    // Warm-up: one trace per session, which every subscriber must receive before the clock starts. The figures below
    // are then steady-state delivery; how long a thousand subscriptions opened at once take to go live is reported
    // on its own.
    let warming = Instant::now();
    futures::stream::iter(sessions.iter())
        .map(|s| {
            let trace = json!({ "id": Uuid::new_v4(), "timestamp": chrono::Utc::now().to_rfc3339(), "status": "SUCCESS",
                "source": { "nodeId": "a" }, "target": { "nodeId": "n0" }, "data": { "preview": "warm-up" } });
            server.gql(RECORD, json!({ "s": s, "t": [trace] }))
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    for (_, stream) in subscribers.iter_mut() {
        let msg = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .map_err(|_| anyhow::anyhow!("a subscriber got no warm-up trace within 60 s"))?;
        match msg {
            Some(Ok(v)) if v["payload"]["errors"].is_array() || v["type"] == "error" => {
                anyhow::bail!("a subscription was refused: {v}")
            }
            Some(Ok(_)) => {}
            _ => anyhow::bail!("a subscriber's connection closed during warm-up"),
        }
    }
    let live_after = warming.elapsed().as_secs_f64();

    // The writer: `rate` traces per second in batches every 10 ms, round-robin over the sessions. Each batch's
    // preview names the batch, whose commit acknowledgement time is recorded.
    let per_tick = (sizes.live_rate as f64 * TICK.as_secs_f64()).ceil().max(1.0) as usize;
    let ticks = (sizes.live_seconds as f64 / TICK.as_secs_f64()) as usize;
    let acked: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; ticks]));
    let started = Instant::now();
    let cpu_before = server.cpu_seconds();
    let writer = {
        let (http, url, acked, sessions) =
            (server.http.clone(), format!("{}/graphql", server.base), acked.clone(), sessions.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            let mut inflight = Vec::new();
            for b in 0..ticks {
                tick.tick().await;
                let traces: Vec<Value> = (0..per_tick)
                    .map(|i| {
                        json!({ "id": Uuid::new_v4(), "timestamp": chrono::Utc::now().to_rfc3339(), "status": "SUCCESS",
                        "source": { "nodeId": "a" }, "target": { "nodeId": format!("n{}", i % 5) },
                        "data": { "preview": b.to_string() } })
                    })
                    .collect();
                let (http, url, acked, s) =
                    (http.clone(), url.clone(), acked.clone(), sessions[b % sessions.len()].clone());
                // Batches go out on schedule even when one is slow to commit.
                inflight.push(tokio::spawn(async move {
                    let res = http
                        .post(&url)
                        .json(&json!({ "query": RECORD, "variables": { "s": s, "t": traces } }))
                        .send()
                        .await;
                    let stored = match res {
                        Ok(res) => match res.json::<Value>().await {
                            Ok(body) if body["errors"].is_null() => true,
                            Ok(body) => {
                                eprintln!("batch {b} refused: {}", body["errors"]);
                                false
                            }
                            Err(err) => {
                                eprintln!("batch {b}: unreadable response: {err}");
                                false
                            }
                        },
                        Err(err) => {
                            eprintln!("batch {b} failed: {err}");
                            false
                        }
                    };
                    if stored && let Ok(mut acked) = acked.lock() {
                        acked[b] = Some(Instant::now());
                    }
                }));
            }
            for f in inflight {
                let _ = f.await;
            }
        })
    };

    // Set once the writer is done: how many traces each session's subscribers must get.
    let expected_by_session: Arc<std::sync::OnceLock<Vec<usize>>> = Arc::new(std::sync::OnceLock::new());
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|(session, mut ws)| {
            let expected = expected_by_session.clone();
            tokio::spawn(async move {
                let mut seen = HashSet::new();
                let mut arrivals = Vec::new();
                let mut last_message = Instant::now();
                let mut errors = 0usize;
                // Reads until it has every acknowledged trace of its session, or nothing came for 30 s.
                loop {
                    if expected.get().is_some_and(|e| seen.len() >= e[session]) {
                        break;
                    }
                    let Ok(Some(Ok(v))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await else {
                        if expected.get().is_some() && last_message.elapsed() > Duration::from_secs(30) {
                            break;
                        }
                        continue;
                    };
                    last_message = Instant::now();
                    if v["type"] == "error" || v["payload"]["errors"].is_array() {
                        errors += 1;
                        eprintln!("subscription error: {v}");
                        break;
                    }
                    let node = &v["payload"]["data"]["traces"]["node"];
                    if let (Some(id), Some(batch)) = (node["id"].as_str(), node["data"]["preview"].as_str())
                        && seen.insert(id.to_owned())
                    {
                        arrivals.push((batch.parse::<usize>().unwrap_or(0), Instant::now()));
                    }
                }
                (session, seen.len(), arrivals, errors)
            })
        })
        .collect();
    writer.await?;
    let ingest_secs = started.elapsed().as_secs_f64();
    let (mut latencies, mut expected_total, mut received) = (Vec::new(), 0usize, 0usize);
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let mut expected = vec![0usize; session_count];
    for (b, ack) in acked.iter().enumerate() {
        if ack.is_some() {
            expected[b % session_count] += per_tick;
        }
    }
    let _ = expected_by_session.set(expected.clone());
    let mut results = Vec::new();
    for r in readers {
        results.push(r.await?);
    }
    let drained = started.elapsed().as_secs_f64();
    let cpu = cpu_before.zip(server.cpu_seconds()).map(|(before, after)| after - before);
    let rejected = acked.iter().filter(|a| a.is_none()).count();
    let mut refused = 0;
    for (k, (session, got, arrivals, errors)) in results.into_iter().enumerate() {
        refused += errors;
        if got < expected[session] {
            eprintln!("subscriber {k} (session {session}) got {got} of {} traces", expected[session]);
        }
        expected_total += expected[session];
        received += got;
        for (batch, at) in arrivals {
            if let Some(Some(ack)) = acked.get(batch) {
                latencies.push(at.saturating_duration_since(*ack).as_secs_f64() * 1000.0);
            }
        }
    }
    let (p50, p99) = percentiles(latencies);
    let lost = expected_total.saturating_sub(received);
    let achieved = ((ticks - rejected) * per_tick) as f64 / ingest_secs;
    if slow {
        report.add(
            section,
            "subscribers that stopped reading (of all subscribers)",
            format!("{} of {}", stalled.len(), stalled.len() + sizes.subscribers),
            "",
            None,
        );
    }
    drop(stalled);
    report.add(
        section,
        "batches refused by the server (not counted as sent)",
        format!("{rejected} of {ticks}"),
        "",
        None,
    );
    report.add(
        section,
        &format!("{} subscriptions opened at once: all live (warm-up trace received) after (s)", sizes.subscribers),
        format!("{live_after:.1}"),
        "",
        None,
    );
    report.add(
        section,
        &format!(
            "{} subscribers ({} per session), {:.0} traces/s ingested for {} s",
            sizes.subscribers, sizes.viewers_per_session, achieved, sizes.live_seconds
        ),
        format!("{received} deliveries"),
        "",
        None,
    );
    report.add(
        section,
        "commit acknowledged → client, p50 / p99",
        format!("{p50:.1} / {p99:.1} ms"),
        "p99 < 50 ms",
        Some(p99 < 50.0),
    );
    report.add(section, "all deliveries done after (s)", format!("{drained:.1}"), "", None);
    report.add(section, "subscriptions that ended with an error", format!("{refused}"), "0", Some(refused == 0));
    report.add(
        section,
        "traces never delivered (30 s idle cut-off)",
        format!("{lost} of {expected_total}"),
        "0",
        Some(lost == 0),
    );
    if let Some(cpu) = cpu {
        report.add(
            section,
            "server CPU per delivered trace (ingest included)",
            format!("{:.1} µs", cpu * 1e6 / received.max(1) as f64),
            "",
            None,
        );
    }
    if let Some(rss) = server.peak_rss_mib() {
        let label = format!("server peak RSS during {section} delivery");
        report.add("memory", &label, format!("{rss:.0} MiB"), "", None);
    }
    Ok(())
}
