//! The `sessionState` subscription: the whole state, then only what changed; resumed from any message's cursor, the
//! changes applied onto the state at that message give `sessionStateAt`'s answer.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::fixtures::{RECORD_EVENTS, at, record, session, trace};
use crate::harness::{Kind, TestApp, try_test_db};
use crate::ws_client::{Event, TRANSPORT_WS, WsClient};

const FIELDS: &str =
    "nodeId nodeName status inputCount outputCount lastInput { id } lastOutput { id } lastError { message }";

fn subscription() -> String {
    format!(
        "subscription($s: ID!, $after: String) {{ sessionState(sessionId: $s, after: $after) {{
            cursor sessionStatus state {{ sessionStatus nodes {{ {FIELDS} }} }} node {{ changed {FIELDS} }} }} }}"
    )
}

/// A node's fields as the client holds them.
type Node = Map<String, Value>;

/// The state a client builds from the messages.
#[derive(Clone, Debug, Default, PartialEq)]
struct Applied {
    status: Value,
    nodes: BTreeMap<String, Node>,
}

impl Applied {
    /// Applies one message; returns the names of fields a change sent without changing them.
    fn apply(&mut self, message: &Value) -> Vec<String> {
        self.status = message["sessionStatus"].clone();
        if let Some(nodes) = message["state"]["nodes"].as_array() {
            self.nodes = nodes.iter().map(|n| (n["nodeId"].as_str().unwrap_or("").to_owned(), node(n))).collect();
        }
        let mut redundant = Vec::new();
        if let Some(change) = message["node"].as_object() {
            let id = change["nodeId"].as_str().unwrap_or("").to_owned();
            let fresh = !self.nodes.contains_key(&id);
            let held = self.nodes.entry(id.clone()).or_insert_with(|| node(&json!({ "nodeId": id })));
            let changed = change["changed"].as_array().cloned().unwrap_or_default();
            for (field, value) in change {
                let listed = changed.iter().any(|c| c.as_str().is_some_and(|c| camel(c) == *field));
                if field == "nodeId" || field == "changed" {
                    continue;
                }
                if !listed {
                    assert!(value.is_null(), "{field} not in changed but set: {change:?}");
                    continue;
                }
                if !fresh && held.get(field) == Some(value) {
                    redundant.push(format!("{id}.{field}"));
                }
                held.insert(field.clone(), value.clone());
            }
        }
        redundant
    }
}

/// `LAST_INPUT` as `lastInput`.
fn camel(field: &str) -> String {
    let mut out = String::new();
    for (i, part) in field.split('_').enumerate() {
        let lower = part.to_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            out.push_str(&lower[..1].to_uppercase());
            out.push_str(&lower[1..]);
        }
    }
    out
}

/// Every field of `FIELDS`, null when absent.
fn node(v: &Value) -> Node {
    let mut n = Map::new();
    for f in ["nodeId", "nodeName", "status", "inputCount", "outputCount", "lastInput", "lastOutput", "lastError"] {
        n.insert(f.into(), v.get(f).cloned().unwrap_or(Value::Null));
    }
    n
}

/// `sessionStateAt` as an `Applied`.
async fn state_at(app: &TestApp, s: Uuid, moment: i64) -> Applied {
    let q = format!(
        "query($s: ID!, $at: DateTime!) {{ sessionStateAt(sessionId: $s, at: $at) {{ sessionStatus nodes {{ {FIELDS} }} }} }}"
    );
    let data = app.ok(&q, json!({ "s": s, "at": at(moment) })).await;
    let mut applied = Applied::default();
    applied
        .apply(&json!({ "sessionStatus": data["sessionStateAt"]["sessionStatus"], "state": data["sessionStateAt"] }));
    applied
}

/// Reads messages onto `applied` until it equals `want`; returns each message's cursor with the state after it.
/// `strict`: no message may send a field it does not change (a resumed stream re-sends the rest of a read, whose
/// start the client may hold already).
async fn until(
    ws: &mut WsClient,
    applied: &mut Applied,
    want: &Applied,
    what: &str,
    strict: bool,
) -> Vec<(String, Applied)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while applied != want {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = match ws.next_event(left).await {
            Some(Event::Data(data)) => data["sessionState"].clone(),
            other => panic!("{what}: expected a change, got {other:?}; holding {applied:#?}, want {want:#?}"),
        };
        let redundant = applied.apply(&message);
        assert!(!strict || redundant.is_empty(), "{what}: fields sent unchanged: {redundant:?} in {message}");
        seen.push((message["cursor"].as_str().unwrap_or("").to_owned(), applied.clone()));
    }
    seen
}

/// Step `i` at `t0 + 10 i` seconds: traces along a → b → c → d, a failure at step 3, lifecycle events on c.
async fn step(app: &TestApp, s: Uuid, i: i64) {
    let t = 10 * i;
    let hops = [("a", "b"), ("b", "c"), ("c", "d")];
    let (from, to) = hops[(i as usize) % hops.len()];
    let status = if i == 3 { "ERROR" } else { "SUCCESS" };
    let mut first = trace(t, status, from, to);
    first["source"]["nodeName"] = json!(format!("{from} step {i}"));
    record(app, s, vec![first, trace(t + 1, "SUCCESS", "a", "b")]).await;
    let kind = match i {
        2 => Some("START"),
        4 => Some("LOG"),
        5 => Some("COMPLETE"),
        _ => None,
    };
    if let Some(kind) = kind {
        let event = json!({ "id": Uuid::new_v4(), "nodeId": "c", "eventType": kind, "timestamp": at(t + 2) });
        app.ok(RECORD_EVENTS, json!({ "s": s, "e": [event] })).await;
    }
}

async fn check(app: &TestApp) {
    let s = session(app, "state", 0).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    ws.subscribe(&subscription(), json!({ "s": s })).await;
    let mut applied = Applied::default();
    let mut history = until(&mut ws, &mut applied, &state_at(app, s, 5).await, "the first state", true).await;
    assert!(applied.nodes.is_empty(), "nothing yet: {applied:?}");
    let steps = 7;
    for i in 0..steps {
        step(app, s, i).await;
        let want = state_at(app, s, 10 * i + 5).await;
        history.extend(until(&mut ws, &mut applied, &want, &format!("step {i}"), true).await);
    }
    let end = 10 * steps + 5;
    let complete =
        "mutation($id: ID!, $end: DateTime) { completeSession(id: $id, status: FAILED, endTime: $end) { id } }";
    app.ok(complete, json!({ "id": s, "end": at(end) })).await;
    let last = state_at(app, s, end).await;
    assert_eq!(last.status, json!("FAILED"));
    history.extend(until(&mut ws, &mut applied, &last, "the session's end", true).await);
    ws.assert_quiet(Duration::from_millis(300)).await;

    // From every cursor a client may hold, onto the state it held there.
    for (cursor, held) in &history {
        let mut resumed = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
        resumed.subscribe(&subscription(), json!({ "s": s, "after": cursor })).await;
        let mut state = held.clone();
        until(&mut resumed, &mut state, &last, &format!("resumed from {cursor}"), false).await;
        resumed.assert_quiet(Duration::from_millis(200)).await;
    }
    // A fresh subscription sends the whole state at once.
    let mut fresh = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    fresh.subscribe(&subscription(), json!({ "s": s })).await;
    let first = fresh.next_data().await["sessionState"].clone();
    assert!(first["node"].is_null() && first["state"].is_object(), "{first}");
    let mut state = Applied::default();
    state.apply(&first);
    assert_eq!(state, last);

    // Cursors of another session, or of nothing, are refused; so is an unknown session.
    let other = session(app, "state", 1).await;
    let (cursor, _) = &history[history.len() - 1];
    for (session_id, after, code) in [
        (json!(other), json!(cursor), "BAD_USER_INPUT"),
        (json!(s), json!("not a cursor"), "BAD_USER_INPUT"),
        (json!(Uuid::new_v4()), json!(null), "NOT_FOUND"),
    ] {
        let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
        ws.subscribe(&subscription(), json!({ "s": session_id, "after": after })).await;
        match ws.next_event(Duration::from_secs(10)).await {
            Some(Event::Error(errors)) => assert_eq!(errors[0]["extensions"]["code"], code, "{errors}"),
            other => panic!("expected {code}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn session_state_sends_what_changed_and_resumes_from_any_cursor_in_both_modes() {
    check(&TestApp::start(Kind::Default).await).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check(&TestApp::with_db(db, Default::default()).await).await;
    }
}
