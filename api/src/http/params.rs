//! The parameters of a GraphQL-over-HTTP request (`query`, `operationName`, `variables`, `extensions`), from a JSON
//! body or a URL's query string, checked by type before anything runs: a wrong type is the client's mistake, answered
//! with 400 whatever the media type (the GraphQL over HTTP spec's "well-formed request").

use async_graphql::{BatchRequest, Request, Variables};
use serde_json::{Map, Value};

/// Why a request is not a well-formed GraphQL-over-HTTP request; answered with 400.
#[derive(Debug)]
pub struct Malformed(pub String);

/// A POST body: one request object, or a batch (a non-empty array of them).
pub fn from_body(body: &[u8]) -> Result<BatchRequest, Malformed> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| Malformed(format!("the request body is not a GraphQL request in JSON: {err}")))?;
    match value {
        Value::Array(items) if items.is_empty() => {
            Err(Malformed("the request body is an empty batch: send at least one request".into()))
        }
        Value::Array(items) => {
            let requests = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| from_object(item).map_err(|Malformed(m)| Malformed(format!("batch item {i}: {m}"))))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(BatchRequest::Batch(requests))
        }
        value => Ok(BatchRequest::Single(from_object(value)?)),
    }
}

fn from_object(value: Value) -> Result<Request, Malformed> {
    let Value::Object(mut object) = value else {
        return Err(Malformed(
            "the request body is not a GraphQL request in JSON: expected an object with a `query`".into(),
        ));
    };
    let query = match object.remove("query") {
        Some(Value::String(query)) => Some(query),
        None | Some(Value::Null) => None,
        Some(other) => return Err(Malformed(format!("`query` must be a string, not {}", kind(&other)))),
    };
    let operation_name = match object.remove("operationName") {
        Some(Value::String(name)) => Some(name),
        None | Some(Value::Null) => None,
        Some(other) => return Err(Malformed(format!("`operationName` must be a string, not {}", kind(&other)))),
    };
    let variables = map("variables", object.remove("variables"))?;
    let extensions = map("extensions", object.remove("extensions"))?;
    build(query, operation_name, variables, extensions)
}

/// `variables` and `extensions`: a map, or absent.
fn map(name: &str, value: Option<Value>) -> Result<Option<Map<String, Value>>, Malformed> {
    match value {
        Some(Value::Object(map)) => Ok(Some(map)),
        None | Some(Value::Null) => Ok(None),
        Some(other) => Err(Malformed(format!("`{name}` must be a JSON object, not {}", kind(&other)))),
    }
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
    let json = |name: &str, text: Option<String>| -> Result<Option<Map<String, Value>>, Malformed> {
        let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
        let value = serde_json::from_str(&text)
            .map_err(|err| Malformed(format!("`{name}` must be a URL-encoded JSON object: {err}")))?;
        map(name, Some(value))
    };
    let variables = json("variables", params.variables)?;
    let extensions = json("extensions", params.extensions)?;
    build(params.query, params.operation_name.filter(|n| !n.is_empty()), variables, extensions)
}

fn build(
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Map<String, Value>>,
    extensions: Option<Map<String, Value>>,
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
        request = request.variables(Variables::from_json(Value::Object(variables)));
    }
    for (name, value) in extensions.unwrap_or_default() {
        let value = async_graphql::Value::from_json(value)
            .map_err(|err| Malformed(format!("`extensions.{name}` is not a GraphQL value: {err}")))?;
        request.extensions.0.insert(name, value);
    }
    Ok(request)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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
