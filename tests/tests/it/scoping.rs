//! Who sees which rows: a `service_role` token everything; an `authenticated` token the sessions whose `userId` is
//! its `sub`, and whole workflows its claim grants; a read key limited to a workflow that workflow. Every query and
//! subscription is asked by each, and what comes back (rows, counts, `totalCount`, pages by cursor, refusals) is
//! what the rule gives for the rows written.

use std::time::Duration;

use chrono::Utc;
use flowtrace::auth::{AuthArgs, hash_api_key};
use flowtrace::config::ServeArgs;
use serde_json::{Value, json};

use crate::harness::{Kind, TestApp, test_db};
use crate::ws_client::{Event, TRANSPORT_WS, WsClient};

const SECRET: &str = "scoping-secret-with-enough-entropy-0123456789";
const KEY_B: &str = "key-limited-to-wf-b";

/// The sessions written: id, workflow, userId, traces, events.
const RUNS: [(&str, &str, &str, usize, usize); 3] =
    [("a1", "wf-a", "alice", 3, 2), ("a2", "wf-a", "bob", 2, 1), ("b1", "wf-b", "carol", 4, 0)];

#[derive(Clone, Copy, Debug)]
enum Who {
    Service,
    Alice,
    Bob,
    /// Alice with `app_metadata.workflows: ["wf-b"]`.
    AliceGrantedB,
    KeyB,
}

const EVERYONE: [Who; 5] = [Who::Service, Who::Alice, Who::Bob, Who::AliceGrantedB, Who::KeyB];

impl Who {
    fn token(self) -> String {
        let claims = match self {
            Who::Service => json!({ "role": "service_role", "sub": "ingest" }),
            Who::Alice => json!({ "role": "authenticated", "sub": "alice" }),
            Who::Bob => json!({ "role": "authenticated", "sub": "bob" }),
            Who::AliceGrantedB => {
                json!({ "role": "authenticated", "sub": "alice", "app_metadata": { "workflows": ["wf-b"] } })
            }
            Who::KeyB => return KEY_B.into(),
        };
        let mut claims = claims;
        claims["exp"] = json!(Utc::now().timestamp() + 600);
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
    }

    /// The rule, from the caller's side.
    fn sees(self, workflow: &str, user: &str) -> bool {
        match self {
            Who::Service => true,
            Who::Alice => user == "alice",
            Who::Bob => user == "bob",
            Who::AliceGrantedB => user == "alice" || workflow == "wf-b",
            Who::KeyB => workflow == "wf-b",
        }
    }

    /// Whether it may read the aggregates of `workflow` (all of its granted ones for `None`).
    fn reads_aggregates(self, workflow: Option<&str>) -> bool {
        match self {
            Who::Service => true,
            Who::Alice | Who::Bob => false,
            Who::AliceGrantedB | Who::KeyB => workflow.is_none_or(|w| w == "wf-b"),
        }
    }

    fn runs(self) -> impl Iterator<Item = (&'static str, &'static str, &'static str, usize, usize)> {
        RUNS.into_iter().filter(move |(_, w, u, _, _)| self.sees(w, u))
    }
}

struct Caller<'a> {
    app: &'a TestApp,
    token: String,
}

impl Caller<'_> {
    async fn body(&self, query: &str, variables: Value) -> Value {
        let authorization = format!("Bearer {}", self.token);
        self.app.post(json!({ "query": query, "variables": variables }), Some(&authorization)).await
    }

    async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.body(query, variables).await;
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// The data, or the first error's code.
    async fn data_or_code(&self, query: &str, variables: Value) -> Result<Value, String> {
        let body = self.body(query, variables).await;
        match body["errors"][0]["extensions"]["code"].as_str() {
            Some(code) => Err(code.to_owned()),
            None => Ok(body["data"].clone()),
        }
    }
}

fn at(second: usize) -> String {
    format!("2026-12-01T10:00:{second:02}Z")
}

async fn write_runs(service: &Caller<'_>) {
    let start = "mutation($i: StartSessionInput!) { startSession(input: $i) { id } }";
    let traces = "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }";
    let events = "mutation($s: ID!, $e: [EventInput!]!) { recordEvents(sessionId: $s, events: $e) { accepted } }";
    for (i, (id, workflow, user, n, e)) in RUNS.into_iter().enumerate() {
        let input = json!({ "id": id, "workflowId": workflow, "workflowName": workflow, "userId": user,
                            "startTime": at(i) });
        service.data(start, json!({ "i": input })).await;
        let rows: Vec<Value> = (0..n)
            .map(|k| {
                json!({ "timestamp": at(10 + k), "status": if k == 0 { "ERROR" } else { "SUCCESS" },
                             "duration": 5.0, "source": { "nodeId": format!("n{k}") },
                             "target": { "nodeId": format!("n{}", k + 1) } })
            })
            .collect();
        service.data(traces, json!({ "s": id, "t": rows })).await;
        if e > 0 {
            let rows: Vec<Value> =
                (0..e).map(|k| json!({ "nodeId": "n0", "eventType": "LOG", "timestamp": at(20 + k) })).collect();
            service.data(events, json!({ "s": id, "e": rows })).await;
        }
    }
}

async fn app() -> TestApp {
    let auth = AuthArgs {
        jwt_secret: Some(SECRET.into()),
        api_keys: vec![format!("read:{}:wf-b", hash_api_key(KEY_B))],
        ..Default::default()
    };
    TestApp::with_db(test_db(Kind::Default).await, ServeArgs { auth, ..Default::default() }).await
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        v.as_array().expect("list").iter().map(|n| n["id"].as_str().expect("id").to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn every_query_answers_each_caller_with_its_own_rows() {
    let app = app().await;
    write_runs(&Caller { app: &app, token: Who::Service.token() }).await;
    let (from, far) = ("2026-12-01T00:00:00Z", "2026-12-02T00:00:00Z");

    for who in EVERYONE {
        let c = Caller { app: &app, token: who.token() };
        let mine: Vec<String> = who.runs().map(|r| r.0.to_owned()).collect();
        let mine_in = |w: &str| who.runs().filter(|r| r.1 == w).collect::<Vec<_>>();

        let all = c.data("{ sessions { totalCount nodes { id } } }", json!({})).await;
        assert_eq!(ids(&all["sessions"]["nodes"]), mine, "{who:?} sessions");
        assert_eq!(all["sessions"]["totalCount"], json!(mine.len()), "{who:?} sessions totalCount");
        let q = "{ sessions(filter: { workflowId: \"wf-a\" }) { totalCount nodes { id } } }";
        let wf_a = c.data(q, json!({})).await;
        assert_eq!(wf_a["sessions"]["totalCount"], json!(mine_in("wf-a").len()), "{who:?} sessions of wf-a");

        let wf_a_traces: usize = mine_in("wf-a").iter().map(|r| r.3).sum();
        let q = "query($a: String) { traces(workflowId: \"wf-a\", first: 2, after: $a) {
            totalCount edges { cursor node { sessionId } } pageInfo { hasNextPage } } }";
        let (mut paged, mut after) = (0, Value::Null);
        loop {
            let page = c.data(q, json!({ "a": after })).await["traces"].clone();
            assert_eq!(page["totalCount"], json!(wf_a_traces), "{who:?} traces of wf-a totalCount");
            let edges = page["edges"].as_array().expect("edges").clone();
            for e in &edges {
                let s = e["node"]["sessionId"].as_str().expect("session");
                assert!(mine.iter().any(|m| m == s), "{who:?} got a trace of {s}");
            }
            paged += edges.len();
            if page["pageInfo"]["hasNextPage"] != json!(true) {
                break;
            }
            after = edges.last().expect("a page").get("cursor").cloned().expect("cursor");
        }
        assert_eq!(paged, wf_a_traces, "{who:?} traces of wf-a page by page");

        let q = "query($w: String!, $at: DateTime!) {
            workflowStateAt(workflowId: $w, at: $at) { session { id } }
            runningSessions(workflowId: $w, at: $at) { id }
            sessionHistory(workflowId: $w, bucketSeconds: 3600, from: \"2026-12-01T10:00:00Z\",
                           to: \"2026-12-01T10:59:59Z\") { sessions } }";
        let d = c.data(q, json!({ "w": "wf-a", "at": at(30) })).await;
        let latest = mine_in("wf-a").last().map(|r| json!({ "id": r.0 }));
        assert_eq!(d["workflowStateAt"]["session"], latest.unwrap_or(Value::Null), "{who:?} workflowStateAt");
        let running: Vec<String> = mine_in("wf-a").iter().rev().map(|r| r.0.to_owned()).collect();
        assert_eq!(ids(&d["runningSessions"]), { running.clone() }.into_iter().rev().collect::<Vec<_>>());
        assert_eq!(d["sessionHistory"][0]["sessions"], json!(running.len()), "{who:?} sessionHistory");

        for (id, workflow, user, n, e) in RUNS {
            let visible = who.sees(workflow, user);
            let q = "query($s: ID!) { session(id: $s) { id traces { totalCount } events { totalCount } }
                traces(sessionId: $s) { totalCount edges { cursor } }
                events(sessionId: $s) { totalCount }
                replayTraces(sessionId: $s, start: \"2026-12-01T00:00:00Z\", end: \"2026-12-02T00:00:00Z\") {
                    totalCount } }";
            let d = c.data(q, json!({ "s": id })).await;
            let (traces, events) = if visible { (n, e) } else { (0, 0) };
            let session =
                visible.then(|| json!({ "id": id, "traces": { "totalCount": n }, "events": { "totalCount": e } }));
            assert_eq!(d["session"], session.unwrap_or(Value::Null), "{who:?} session {id}");
            assert_eq!(d["traces"]["totalCount"], json!(traces), "{who:?} traces of {id}");
            assert_eq!(d["traces"]["edges"].as_array().map(Vec::len), Some(traces), "{who:?} trace rows of {id}");
            assert_eq!(d["events"]["totalCount"], json!(events), "{who:?} events of {id}");
            assert_eq!(d["replayTraces"]["totalCount"], json!(traces), "{who:?} replayTraces of {id}");

            // What is not the caller's does not exist for it.
            for q in [
                "query($s: ID!) { sessionStateAt(sessionId: $s, at: \"2026-12-02T00:00:00Z\") { session { id } } }",
                "query($s: ID!) { sessionReport(sessionId: $s) { totalTraces } }",
                "query($s: ID!) { executionTimeline(sessionId: $s, bucketSeconds: 60) { traceCount } }",
                "query($s: ID!) { compareSessions(a: $s, b: $s) { firstDivergence { nodeId } } }",
            ] {
                match c.data_or_code(q, json!({ "s": id })).await {
                    Ok(_) if visible => {}
                    Err(code) if !visible => assert_eq!(code, "NOT_FOUND", "{who:?} {q} of {id}"),
                    other => panic!("{who:?} {q} of {id} (visible: {visible}): {other:?}"),
                }
            }
            if visible {
                let report =
                    c.data("query($s: ID!) { sessionReport(sessionId: $s) { totalTraces } }", json!({ "s": id }));
                assert_eq!(report.await["sessionReport"]["totalTraces"], json!(n), "{who:?} report of {id}");
            }
        }

        // Aggregates count every user's sessions: only for granted workflows.
        for workflow in [Some("wf-a"), Some("wf-b"), None] {
            let q = "query($w: String, $f: DateTime!, $t: DateTime!) {
                sessionStats(workflowId: $w, granularity: HOUR, from: $f, to: $t) { workflowId sessions }
                nodePerformance(workflowId: $w, from: $f, to: $t) { workflowId traceCount } }";
            let got = c.data_or_code(q, json!({ "w": workflow, "f": from, "t": far })).await;
            if !who.reads_aggregates(workflow) {
                assert_eq!(got, Err("FORBIDDEN".into()), "{who:?} aggregates of {workflow:?}");
                continue;
            }
            let d = got.expect("aggregates");
            let granted = |w: &str| workflow.is_none_or(|x| x == w) && (matches!(who, Who::Service) || w == "wf-b");
            let sessions: i64 =
                d["sessionStats"].as_array().expect("stats").iter().map(|b| b["sessions"].as_i64().expect("n")).sum();
            let traces: i64 = d["nodePerformance"]
                .as_array()
                .expect("perf")
                .iter()
                .map(|b| b["traceCount"].as_i64().expect("n"))
                .sum();
            let want_sessions = RUNS.iter().filter(|r| granted(r.1)).count() as i64;
            let want_traces: usize = RUNS.iter().filter(|r| granted(r.1)).map(|r| r.3).sum();
            assert_eq!((sessions, traces), (want_sessions, want_traces as i64), "{who:?} aggregates of {workflow:?}");
        }

        for workflow in ["wf-a", "wf-b"] {
            let q = "query($w: String!, $f: DateTime!, $t: DateTime!) {
                workflowAnalytics(workflowId: $w, from: $f, to: $t) { sessions }
                dependencyGraph(workflowId: $w, from: $f, to: $t) { edges { traceCount } } }";
            let got = c.data_or_code(q, json!({ "w": workflow, "f": from, "t": far })).await;
            if !who.reads_aggregates(Some(workflow)) {
                assert_eq!(got, Err("FORBIDDEN".into()), "{who:?} workflowAnalytics and dependencyGraph of {workflow}");
                continue;
            }
            let d = got.expect("workflow aggregates");
            let runs: Vec<_> = RUNS.iter().filter(|r| r.1 == workflow).collect();
            let traces: i64 = d["dependencyGraph"]["edges"]
                .as_array()
                .expect("edges")
                .iter()
                .map(|e| e["traceCount"].as_i64().expect("n"))
                .sum();
            assert_eq!(
                d["workflowAnalytics"]["sessions"],
                json!(runs.len()),
                "{who:?} workflowAnalytics of {workflow}"
            );
            assert_eq!(traces, runs.iter().map(|r| r.3 as i64).sum::<i64>(), "{who:?} dependencyGraph of {workflow}");
        }

        let storage = c.data_or_code("{ storage { mode } }", json!({})).await;
        assert_eq!(storage.is_ok(), matches!(who, Who::Service), "{who:?} storage: {storage:?}");
    }
}

#[tokio::test]
async fn every_subscription_delivers_each_caller_only_its_rows() {
    let app = app().await;
    let service = Caller { app: &app, token: Who::Service.token() };
    write_runs(&service).await;
    let connect = |who: Who| {
        let base = app.base.clone();
        async move {
            WsClient::connect(&base, TRANSPORT_WS, json!({ "Authorization": format!("Bearer {}", who.token()) })).await
        }
    };

    // Another caller's session does not exist, for every subscription of a session.
    for (id, workflow, user, n, _) in RUNS {
        for who in EVERYONE {
            for q in [
                "subscription($s: ID!) { traces(sessionId: $s) { node { id } } }",
                "subscription($s: ID!) { events(sessionId: $s) { id } }",
                "subscription($s: ID!) { sessionState(sessionId: $s) { cursor } }",
                "subscription($s: ID!) { replay(sessionId: $s, speed: 1000) { id } }",
            ] {
                let mut ws = connect(who).await;
                ws.subscribe(q, json!({ "s": id })).await;
                let code = match ws.next_event(Duration::from_secs(2)).await {
                    Some(Event::Error(e)) => e[0]["extensions"]["code"].as_str().map(str::to_owned),
                    _ => None,
                };
                let want = (!who.sees(workflow, user)).then(|| "NOT_FOUND".to_owned());
                assert_eq!(code, want, "{who:?} {q} of {id}");
            }
            if who.sees(workflow, user) {
                let mut ws = connect(who).await;
                ws.subscribe("subscription($s: ID!) { traces(sessionId: $s) { node { id } } }", json!({ "s": id }))
                    .await;
                assert_eq!(ws.take(n).await.len(), n, "{who:?} stored traces of {id}");
                ws.assert_quiet(Duration::from_millis(200)).await;
            }
        }
    }

    // Live: each caller following wf-a and every session change gets exactly the rows of its sessions.
    let mut followers = Vec::new();
    for who in EVERYONE {
        let mut ws = connect(who).await;
        ws.subscribe("subscription { traces(workflowId: \"wf-a\") { node { sessionId } } }", json!({})).await;
        ws.subscribe("subscription { sessionUpdates { id } }", json!({})).await;
        followers.push((who, ws));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let record = "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }";
    for id in ["a1", "a2"] {
        let row = json!([{ "timestamp": at(40), "status": "SUCCESS", "source": { "nodeId": "x" }, "target": { "nodeId": "y" } }]);
        service.data(record, json!({ "s": id, "t": row })).await;
    }
    let start = "mutation($i: StartSessionInput!) { startSession(input: $i) { id } }";
    for (id, workflow, user) in [("a3", "wf-a", "alice"), ("b2", "wf-b", "dave")] {
        let input = json!({ "id": id, "workflowId": workflow, "workflowName": workflow, "userId": user });
        service.data(start, json!({ "i": input })).await;
    }
    for (who, ws) in &mut followers {
        let traces: Vec<&str> = ["a1", "a2"]
            .into_iter()
            .filter(|id| who.sees("wf-a", RUNS.iter().find(|r| r.0 == *id).expect("run").2))
            .collect();
        let changes: Vec<&str> = [("a3", "wf-a", "alice"), ("b2", "wf-b", "dave")]
            .into_iter()
            .filter(|r| who.sees(r.1, r.2))
            .map(|r| r.0)
            .collect();
        let mut got_traces = Vec::new();
        let mut got_changes = Vec::new();
        for data in ws.take(traces.len() + changes.len()).await {
            if let Some(s) = data["traces"]["node"]["sessionId"].as_str() {
                got_traces.push(s.to_owned());
            } else {
                got_changes.push(data["sessionUpdates"]["id"].as_str().expect("update").to_owned());
            }
        }
        assert_eq!(got_traces, traces, "{who:?} live traces of wf-a");
        assert_eq!(got_changes, changes, "{who:?} session changes");
        ws.assert_quiet(Duration::from_millis(500)).await;
    }
}
