//! The one-pass `Trace` and `TraceConnection` must answer every query exactly as the derived `TraceType` and
//! `TraceConnectionType` do.

use async_graphql::{EmptyMutation, EmptySubscription, Schema};
use serde_json::{Value as JsonValue, json};

use super::page::TraceConnectionType;
use super::*;
use crate::graphql::one_pass::testing::{assert_same_answers, every_field, run};

struct Rows(Vec<trace::Model>);

#[Object]
impl Rows {
    async fn declared(&self) -> Vec<TraceType> {
        self.0.iter().cloned().map(TraceType).collect()
    }
    async fn resolved(&self) -> Vec<Trace> {
        self.0.iter().cloned().map(Trace).collect()
    }
    async fn declared_page(&self, empty: bool) -> TraceConnectionType {
        self.page(empty).0
    }
    async fn resolved_page(&self, empty: bool) -> TraceConnection {
        self.page(empty)
    }
}

impl Rows {
    fn page(&self, empty: bool) -> TraceConnection {
        let rows = if empty { Vec::new() } else { self.0.clone() };
        trace_connection(PageOf { rows, has_previous: true, has_next: empty }, TraceFilter::default())
    }
}

fn rows() -> Vec<trace::Model> {
    let at = DateTime::from_timestamp(1_795_000_000, 123_456_000).unwrap();
    let full = trace::Model {
        id: "ft_mf3k2q1a_4h8z0c9xk2lq".into(),
        timestamp: at,
        seq: 9_007_199_254_740_993,
        session_id: "fts_mf3k2q1a_x".into(),
        workflow_id: "wf".into(),
        duration: Some(12.5),
        status: TraceStatus::Error,
        source_node_id: "a".into(),
        source_node_name: Some("A".into()),
        source_node_type: Some("http".into()),
        source_port_id: Some("out".into()),
        source_port_name: Some("Out".into()),
        source_port_type: Some("json".into()),
        target_node_id: "b".into(),
        target_node_name: Some("B".into()),
        target_node_type: Some("map".into()),
        target_port_id: Some("in".into()),
        target_port_name: Some("In".into()),
        target_port_type: Some("json".into()),
        data_payload: Some(json!({ "n": 1, "f": 0.25, "s": "x", "l": [true, null, { "deep": -3 }] })),
        data_size: Some(64),
        data_type: Some("object".into()),
        data_preview: Some("{n: 1}".into()),
        error_message: Some("boom".into()),
        error_code: Some("E1".into()),
        error_stack: Some("at b".into()),
        graph_id: "main".into(),
        graph_name: Some("Main".into()),
        parent_trace_id: Some("ft_parent".into()),
        depth: 2,
    };
    let bare = trace::Model {
        id: "0193a3c2-7e55-7c1b-9a10-7f0e2b3c4d5e".into(),
        seq: 5,
        duration: None,
        status: TraceStatus::Warning,
        source_node_name: None,
        source_node_type: None,
        source_port_id: None,
        source_port_name: None,
        source_port_type: None,
        target_node_name: None,
        target_node_type: None,
        target_port_id: None,
        target_port_name: None,
        target_port_type: None,
        data_payload: None,
        data_size: None,
        data_type: None,
        data_preview: None,
        error_message: None,
        error_code: None,
        error_stack: None,
        graph_name: None,
        parent_trace_id: None,
        depth: 0,
        ..full.clone()
    };
    vec![full, bare]
}

fn schema() -> Schema<Rows, EmptyMutation, EmptySubscription> {
    Schema::new(Rows(rows()), EmptyMutation, EmptySubscription)
}

#[tokio::test]
async fn one_pass_traces_answer_as_the_derived_resolvers_do() {
    let schema = schema();
    let all = every_field(&schema, "Trace", &[]).await;
    assert!(all.contains("source { nodeId") && all.contains("error { message"), "{all}");
    let fragments = "fragment T on Trace { duration depth parentTraceId source { ...N } } \
                     fragment N on NodeRef { nodeType portName } fragment E on TraceError { code stack }";
    // (variables, selection, fragments) of each query.
    let shapes = [
        ("", all.clone(), ""),
        // Aliases, __typename at every level, a key asked twice merges its sub-selections.
        (
            "",
            "__typename a: id b: id ts: timestamp source { nodeId __typename } source { portId nodeId } \
             data { __typename payload } data { size }"
                .into(),
            "",
        ),
        // Named and inline fragments, with and without a type condition, nested.
        (
            "",
            "...T ... on Trace { seq error { ...E } } ... { graphId target { ... on NodeRef { nodeName } } }".into(),
            fragments,
        ),
        // @skip and @include by variable.
        (
            "($yes: Boolean!, $no: Boolean!)",
            "id seq @skip(if: $yes) status @include(if: $yes) data @skip(if: $yes) { payload } \
             source @include(if: $no) { nodeId }"
                .into(),
            "",
        ),
    ];
    let vars = json!({ "yes": true, "no": false });
    for answer in assert_same_answers(&schema, ("declared", "resolved"), &shapes, vars).await {
        assert_eq!(answer.as_array().map(Vec::len), Some(2), "{answer}");
    }

    let data = run(&schema, &format!("{{ resolved {{ {all} }} }}"), json!({})).await;
    let full = &data["resolved"][0];
    assert_eq!(full["seq"], "9007199254740993");
    assert_eq!(full["status"], "ERROR");
    assert_eq!(full["data"]["payload"]["l"][2]["deep"], -3);
    assert_eq!(full["error"]["code"], "E1");
    assert_eq!(full["source"]["portType"], "json");
    let bare = &data["resolved"][1];
    assert_eq!(bare["error"], JsonValue::Null);
    assert_eq!(bare["duration"], JsonValue::Null);
    assert_eq!(bare["status"], "WARNING");
}

#[tokio::test]
async fn one_pass_trace_pages_answer_as_the_derived_resolvers_do() {
    let schema = schema();
    let names = run(&schema, r#"{ __type(name: "TraceConnection") { fields { name } } }"#, json!({})).await;
    let names: Vec<&str> =
        names["__type"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["pageInfo", "edges", "nodes", "totalCount"],
        "a field added to TraceConnection needs resolving here"
    );
    let trace = every_field(&schema, "Trace", &[]).await;
    let fragments = "fragment C on TraceConnection { nodes { status } } fragment E on TraceEdge { node { timestamp } }";
    // (variables, selection, fragments) of each query.
    let shapes = [
        (
            "($empty: Boolean!)",
            format!(
                "pageInfo {{ hasPreviousPage hasNextPage startCursor endCursor }} edges {{ cursor node {{ {trace} }} }} \
                 nodes {{ {trace} }}"
            ),
            "",
        ),
        // Aliases, __typename at every level, a key asked twice merges its sub-selections.
        (
            "($empty: Boolean!)",
            "__typename p: pageInfo { __typename endCursor } pageInfo { startCursor } \
             edges { __typename cursor c: cursor } edges { node { id } } nodes { seq }"
                .into(),
            "",
        ),
        // Named and inline fragments, with and without a type condition, nested.
        (
            "($empty: Boolean!)",
            "...C ... on TraceConnection { edges { ...E } } ... { pageInfo { ... on PageInfo { hasNextPage } } }".into(),
            fragments,
        ),
        // @skip and @include by variable.
        (
            "($empty: Boolean!, $yes: Boolean!, $no: Boolean!)",
            "edges @include(if: $no) { cursor } pageInfo @skip(if: $no) { hasPreviousPage } nodes @include(if: $yes) { id }"
                .into(),
            "",
        ),
    ];
    let fields = ("declaredPage(empty: $empty)", "resolvedPage(empty: $empty)");
    for empty in [false, true] {
        assert_same_answers(&schema, fields, &shapes, json!({ "yes": true, "no": false, "empty": empty })).await;
    }
    let data = run(&schema, "{ resolvedPage(empty: false) { pageInfo { startCursor endCursor } } }", json!({})).await;
    assert!(data["resolvedPage"]["pageInfo"]["startCursor"].is_string(), "{data}");
}
