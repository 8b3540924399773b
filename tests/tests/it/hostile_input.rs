//! Hostile values in every argument of every query and mutation, and in every field of their input objects, found by
//! introspection so new arguments are covered too: the answer is data or a client error (BAD_USER_INPUT,
//! LIMIT_EXCEEDED, NOT_FOUND, ...), never INTERNAL, never the database's own text. Then the specific refusals: NUL
//! characters, times PostgreSQL cannot store, forged cursors.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{RECORD, START, at, session, trace};
use crate::harness::{Kind, TestApp};

const INTROSPECT: &str = "{ __schema { queryType { name } mutationType { name }
    types { name kind enumValues { name } inputFields { name type { ...T } }
        fields { name type { ...T } args { name type { ...T } } } } }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

/// Words of database errors that must never reach a client.
const DATABASE_TEXT: [&str; 10] = [
    "sqlstate",
    "sqlx",
    "error returned from database",
    "violates",
    "database error",
    "duplicate key",
    "out of range for type",
    "invalid input syntax",
    "unsupported unicode escape",
    "invalid byte sequence",
];

fn cursor(text: &str) -> Value {
    Value::String(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text))
}

struct Schema {
    types: HashMap<String, Value>,
}

/// A type reference rendered as GraphQL (`[TraceInput!]!`), and its named type.
fn render(ty: &Value) -> String {
    match ty["kind"].as_str() {
        Some("NON_NULL") => format!("{}!", render(&ty["ofType"])),
        Some("LIST") => format!("[{}]", render(&ty["ofType"])),
        _ => ty["name"].as_str().unwrap_or("").to_owned(),
    }
}

fn named(ty: &Value) -> &Value {
    if ty["ofType"].is_object() { named(&ty["ofType"]) } else { ty }
}

fn is_list(ty: &Value) -> bool {
    match ty["kind"].as_str() {
        Some("NON_NULL") => is_list(&ty["ofType"]),
        Some("LIST") => true,
        _ => false,
    }
}

impl Schema {
    /// A valid value of `ty`.
    fn valid(&self, ty: &Value, session: Uuid) -> Value {
        let value = self.valid_named(named(ty), session);
        if is_list(ty) { json!([value]) } else { value }
    }

    fn valid_named(&self, ty: &Value, session: Uuid) -> Value {
        let name = ty["name"].as_str().unwrap_or("");
        match (ty["kind"].as_str(), name) {
            (_, "UUID" | "ID") => json!(session),
            (_, "String") => json!("wf-hostile"),
            (_, "DateTime") => json!(at(0)),
            (_, "Int") => json!(60),
            (_, "Float") => json!(1.0),
            (_, "Boolean") => json!(true),
            (_, "JSON") => json!({ "k": "v" }),
            (Some("ENUM"), _) => self.types[name]["enumValues"][0]["name"].clone(),
            (Some("INPUT_OBJECT"), _) => {
                let mut object = serde_json::Map::new();
                for field in self.types[name]["inputFields"].as_array().into_iter().flatten() {
                    if field["type"]["kind"] == "NON_NULL" {
                        object.insert(
                            field["name"].as_str().unwrap_or("").to_owned(),
                            self.valid(&field["type"], session),
                        );
                    }
                }
                Value::Object(object)
            }
            _ => Value::Null,
        }
    }

    /// Hostile values for an argument or input field called `name` of type `ty`.
    fn hostile(&self, name: &str, ty: &Value, session: Uuid) -> Vec<Value> {
        let inner = named(ty);
        let type_name = inner["name"].as_str().unwrap_or("");
        let values: Vec<Value> = match (inner["kind"].as_str(), type_name) {
            (_, "String") if name == "after" || name == "before" => vec![
                cursor("trace:-9223372036854775808:1"),
                cursor("trace:-250000000000000000:1"),
                cursor("trace:9223372036854775807:9223372036854775807"),
                cursor("event:-250000000000000000:1"),
                cursor("session:-250000000000000000:00000000-0000-0000-0000-000000000000"),
                cursor("trace:1:1\u{0}"),
                json!("\u{0}"),
                json!("x".repeat(100_000)),
            ],
            (_, "String") => vec![
                json!("a\u{0}b"),
                json!("x".repeat(100_000)),
                json!(""),
                json!("'; SELECT 1; --"),
                json!("\u{10FFFF}\u{FFFE}%_\\"),
            ],
            (_, "UUID" | "ID") => vec![
                json!(Uuid::nil()),
                json!(""),
                json!("a\u{0}b"),
                json!("x".repeat(129)),
                json!("\u{85}"),
                json!("x".repeat(100_000)),
            ],
            (_, "DateTime") => vec![
                json!("-100000-01-01T00:00:00Z"),
                json!("+275000-01-01T00:00:00Z"),
                json!("-4714-01-01T00:00:00Z"),
                json!("+262143-12-31T23:59:59Z"),
                json!("0000-01-01T00:00:00Z"),
                json!("garbage"),
            ],
            (_, "Int") => vec![json!(i32::MAX), json!(i32::MIN), json!(0), json!(-1)],
            (_, "Float") => vec![json!(1e308), json!(-1e308), json!(0.0), json!(-1.0), json!(5e-324)],
            (_, "JSON") => {
                vec![json!({ "\u{0}": 1 }), json!({ "k": "\u{0}" }), json!(["\u{0}"]), json!("\u{0}"), json!(1e308)]
            }
            (Some("ENUM"), _) => vec![json!("NOT_A_VALUE")],
            (Some("INPUT_OBJECT"), _) => {
                let mut out = Vec::new();
                let base = self.valid_named(inner, session);
                for field in self.types[type_name]["inputFields"].as_array().into_iter().flatten() {
                    let field_name = field["name"].as_str().unwrap_or("");
                    for value in self.hostile(field_name, &field["type"], session) {
                        let mut object = base.clone();
                        object[field_name] = value;
                        out.push(object);
                    }
                }
                out
            }
            _ => Vec::new(),
        };
        if is_list(ty) { values.into_iter().map(|v| json!([v])).collect() } else { values }
    }
}

fn assert_no_internal(field: &str, arg: &str, value: &Value, body: &Value) {
    for error in body["errors"].as_array().into_iter().flatten() {
        let code = error["extensions"]["code"].as_str().unwrap_or("");
        let message = error["message"].as_str().unwrap_or("").to_lowercase();
        let shown: String = value.to_string().chars().take(120).collect();
        assert_ne!(code, "INTERNAL", "{field}({arg}: {shown}): {error}");
        assert!(!code.is_empty(), "{field}({arg}: {shown}): an error without a code: {error}");
        for text in DATABASE_TEXT {
            assert!(!message.contains(text), "{field}({arg}: {shown}): database text in {error}");
        }
    }
}

#[tokio::test]
async fn hostile_values_in_every_argument_never_answer_internal_or_database_text() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf-hostile", 0).await;
    app.ok(RECORD, json!({ "s": s, "t": [trace(1, "SUCCESS", "a", "b")] })).await;
    let introspection = app.ok(INTROSPECT, json!({})).await;
    let types: HashMap<String, Value> = introspection["__schema"]["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| (t["name"].as_str().unwrap_or("").to_owned(), t.clone()))
        .collect();
    let schema = Schema { types };
    let (mut sent, mut answered) = (0, 0);
    for (kind, root) in [("query", "Query"), ("mutation", "Mutation")] {
        for field in schema.types[root]["fields"].as_array().expect("fields") {
            let name = field["name"].as_str().expect("name");
            let selection = if named(&field["type"])["kind"] == "OBJECT" { "{ __typename }" } else { "" };
            let args = field["args"].as_array().expect("args");
            let declared: Vec<String> =
                args.iter().map(|a| format!("${}: {}", a["name"].as_str().unwrap_or(""), render(&a["type"]))).collect();
            let passed: Vec<String> =
                args.iter().map(|a| format!("{0}: ${0}", a["name"].as_str().unwrap_or(""))).collect();
            let (declared, passed) = if args.is_empty() {
                (String::new(), String::new())
            } else {
                (format!("({})", declared.join(", ")), format!("({})", passed.join(", ")))
            };
            let query = format!("{kind}{declared} {{ {name}{passed} {selection} }}");
            for arg in args {
                let arg_name = arg["name"].as_str().unwrap_or("");
                for value in schema.hostile(arg_name, &arg["type"], s) {
                    let mut variables = serde_json::Map::new();
                    for other in args {
                        if other["type"]["kind"] == "NON_NULL" {
                            let other_name = other["name"].as_str().unwrap_or("").to_owned();
                            variables.insert(other_name, schema.valid(&other["type"], s));
                        }
                    }
                    variables.insert(arg_name.to_owned(), value.clone());
                    let body = app.gql(&query, Value::Object(variables)).await;
                    assert_no_internal(name, arg_name, &value, &body);
                    sent += 1;
                    if !body["data"][name].is_null() {
                        answered += 1;
                    }
                }
            }
        }
    }
    assert!(sent > 300, "every argument was tried ({sent} requests)");
    // Hostile values that are still valid (an empty filter, an odd but legal string) run the resolver: the requests
    // reached the store and not only validation.
    assert!(answered > 50, "only {answered} of {sent} requests ran their field");
}

#[tokio::test]
async fn nul_characters_are_refused_naming_the_field_and_nothing_is_stored() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf-nul", 0).await;
    let mut with_nul_key = trace(1, "SUCCESS", "a", "b");
    with_nul_key["data"]["payload"] = json!({ "a\u{0}b": 1 });
    let mut with_nul_value = trace(1, "SUCCESS", "a", "b");
    with_nul_value["data"]["payload"] = json!({ "k": ["x\u{0}"] });
    let mut with_nul_node = trace(1, "SUCCESS", "a", "b");
    with_nul_node["source"]["nodeId"] = json!("a\u{0}");
    for (bad, field) in [
        (with_nul_key, "recordTraces(traces)[1].data.payload.a\\u0000b"),
        (with_nul_value, "recordTraces(traces)[1].data.payload.k[0]"),
        (with_nul_node, "recordTraces(traces)[1].source.nodeId"),
    ] {
        let good = trace(2, "SUCCESS", "a", "b");
        let (code, message) = app.err(RECORD, json!({ "s": s, "t": [good, bad] })).await;
        assert_eq!(code, "BAD_USER_INPUT", "{message}");
        assert!(message.contains(field), "names {field}: {message}");
    }
    for (input, field) in [
        (json!({ "workflowId": "wf", "workflowName": "a\u{0}" }), "startSession(input).workflowName"),
        (
            json!({ "workflowId": "wf", "workflowName": "w", "metadata": { "\u{0}": 1 } }),
            "startSession(input).metadata",
        ),
    ] {
        let (code, message) = app.err(START, json!({ "input": input })).await;
        assert_eq!(code, "BAD_USER_INPUT");
        assert!(message.contains(field), "names {field}: {message}");
    }
    let sessions = "{ sessions { edges { node { id } } } }";
    assert_eq!(app.ok(sessions, json!({})).await["sessions"]["edges"].as_array().map(Vec::len), Some(1));
    let search = "query($q: String) { sessions(filter: { search: $q }) { edges { cursor } } }";
    let (code, message) = app.err(search, json!({ "q": "wf\u{0}" })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    assert!(message.contains("sessions(filter).search"), "{message}");
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces").await, 0, "nothing stored");
}

#[tokio::test]
async fn times_postgresql_cannot_store_and_forged_cursors_are_bad_input() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf-time", 0).await;
    let mut ancient = trace(1, "SUCCESS", "a", "b");
    ancient["timestamp"] = json!("-100000-01-01T00:00:00Z");
    let (code, message) = app.err(RECORD, json!({ "s": s, "t": [ancient] })).await;
    assert_eq!(code, "BAD_USER_INPUT", "{message}");
    assert!(message.contains("recordTraces(traces)[0].timestamp"), "{message}");
    for (query, vars) in [
        (
            "query($t: DateTime) { traces(sessionId: \"00000000-0000-0000-0000-000000000000\", from: $t) { edges { cursor } } }",
            json!({ "t": "-100000-01-01T00:00:00Z" }),
        ),
        (
            "query($t: DateTime!) { workflowStateAt(workflowId: \"wf-time\", at: $t) { at } }",
            json!({ "t": "-100000-01-01T00:00:00Z" }),
        ),
        (
            "query($t: DateTime!) { sessionStats(granularity: HOUR, from: $t, to: $t) { sessions } }",
            json!({ "t": "-4714-06-01T00:00:00Z" }),
        ),
        (
            "query($t: DateTime) { sessions(filter: { startedAfter: $t }) { edges { cursor } } }",
            json!({ "t": "+275000-01-01T00:00:00Z" }),
        ),
    ] {
        let (code, message) = app.err(query, vars).await;
        assert_eq!(code, "BAD_USER_INPUT", "{query}: {message}");
    }
    for forged in ["trace:-250000000000000000:1", "trace:9223372036854775807:1"] {
        let query = "query($s: ID!, $a: String) { traces(sessionId: $s, after: $a) { edges { cursor } } }";
        let (code, message) = app.err(query, json!({ "s": s, "a": cursor(forged) })).await;
        assert_eq!(code, "BAD_USER_INPUT", "{forged}: {message}");
        assert!(message.contains("cursor"), "{message}");
    }
}
