//! The parameters of a GraphQL-over-HTTP request (`query`, `operationName`, `variables`, `extensions`), from a JSON
//! body or a URL's query string, checked by type before anything runs: a wrong type is the client's mistake, answered
//! with 400 whatever the media type (the GraphQL over HTTP spec's "well-formed request").

use std::collections::HashMap;

use async_graphql::{BatchRequest, Request, Value, Variables};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// Why a request is not a well-formed GraphQL-over-HTTP request; answered with 400.
#[derive(Debug)]
pub struct Malformed(pub String);

type Extensions = HashMap<String, Value>;

/// One request as sent, each parameter checked by type as it is read (no intermediate JSON tree: an ingest batch
/// can be megabytes of variables).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default, deserialize_with = "query")]
    query: Option<String>,
    #[serde(default, deserialize_with = "operation_name")]
    operation_name: Option<String>,
    #[serde(default, deserialize_with = "variables")]
    variables: Option<Variables>,
    #[serde(default, deserialize_with = "extensions")]
    extensions: Option<Extensions>,
}

/// Reads a parameter, naming it and what it must be when it is something else; `null` is absent.
fn named<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D, what: &str) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d).map_err(|err| D::Error::custom(format!("{what} ({err})")))
}

fn query<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    named(d, "`query` must be a string")
}

fn operation_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    named(d, "`operationName` must be a string")
}

fn variables<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Variables>, D::Error> {
    named(d, "`variables` must be a JSON object")
}

fn extensions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Extensions>, D::Error> {
    named(d, "`extensions` must be a JSON object")
}

/// A POST body: one request object, or a batch (a non-empty array of them).
pub fn from_body(body: &[u8]) -> Result<BatchRequest, Malformed> {
    let not_a_request = |err: serde_json::Error| {
        Malformed(format!("the request body is not a GraphQL request in JSON (an object with a `query`): {err}"))
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let wires: Vec<Wire> = serde_json::from_slice(body).map_err(not_a_request)?;
        if wires.is_empty() {
            return Err(Malformed("the request body is an empty batch: send at least one request".into()));
        }
        let requests = wires
            .into_iter()
            .enumerate()
            .map(|(i, wire)| from_wire(wire).map_err(|Malformed(m)| Malformed(format!("batch item {i}: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(BatchRequest::Batch(requests));
    }
    let wire: Wire = serde_json::from_slice(body).map_err(not_a_request)?;
    Ok(BatchRequest::Single(from_wire(wire)?))
}

fn from_wire(wire: Wire) -> Result<Request, Malformed> {
    build(wire.query, wire.operation_name, wire.variables, wire.extensions)
}

/// The URL parameters of a GET request, each as its text.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct GetParams {
    pub query: Option<String>,
    pub operation_name: Option<String>,
    pub variables: Option<String>,
    pub extensions: Option<String>,
}

impl GetParams {
    /// Whether the URL asks for an operation at all (a plain `GET /graphql` does not).
    pub fn is_empty(&self) -> bool {
        self.query.is_none() && self.extensions.is_none()
    }
}

/// A GET request: `variables` and `extensions` are URL-encoded JSON objects.
pub fn from_url(params: GetParams) -> Result<Request, Malformed> {
    fn json<T: serde::de::DeserializeOwned>(name: &str, text: Option<String>) -> Result<Option<T>, Malformed> {
        let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
        serde_json::from_str::<Option<T>>(&text)
            .map_err(|err| Malformed(format!("`{name}` must be a URL-encoded JSON object: {err}")))
    }
    let variables = json::<Variables>("variables", params.variables)?;
    let extensions = json::<Extensions>("extensions", params.extensions)?;
    build(params.query, params.operation_name.filter(|n| !n.is_empty()), variables, extensions)
}

fn build(
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Variables>,
    extensions: Option<Extensions>,
) -> Result<Request, Malformed> {
    // A persisted query names its document by hash instead of sending it.
    let persisted = extensions.as_ref().is_some_and(|e| e.contains_key("persistedQuery"));
    let query = match query {
        Some(query) => query,
        None if persisted => String::new(),
        None => return Err(Malformed("the request has no `query`: send the GraphQL document as `query`".into())),
    };
    let mut request = Request::new(query);
    request.operation_name = operation_name;
    if let Some(variables) = variables {
        request = request.variables(variables);
    }
    if let Some(extensions) = extensions {
        request.extensions.0 = extensions;
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_checked_and_nulls_are_absent() {
        assert!(from_body(br#"{"query":"{ a }","variables":null,"operationName":null,"extensions":null}"#).is_ok());
        for bad in [
            r#"{"notquery":"{ a }"}"#,
            r#"{"query":0}"#,
            r#"{"query":"{ a }","variables":"x"}"#,
            r#"{"query":"{ a }","extensions":[1]}"#,
            r#"{"query":"{ a }","operationName":false}"#,
            "[]",
            "[1]",
            "null",
            "",
        ] {
            assert!(from_body(bad.as_bytes()).is_err(), "{bad}");
        }
        let persisted = r#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"ab"}}}"#;
        assert!(from_body(persisted.as_bytes()).is_ok(), "a persisted query needs no text");
    }

    #[test]
    fn get_parameters_are_url_encoded_json() {
        let params = GetParams {
            query: Some("query($n: String!) { a(n: $n) }".into()),
            variables: Some(r#"{"n":"x"}"#.into()),
            ..Default::default()
        };
        let request = from_url(params).expect("well-formed");
        assert_eq!(request.variables.into_value().into_json().expect("json"), serde_json::json!({ "n": "x" }));
        let bad = GetParams { query: Some("{ a }".into()), variables: Some("[1]".into()), ..Default::default() };
        assert!(from_url(bad).is_err());
    }
}
