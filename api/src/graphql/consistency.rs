//! Reading one's own writes with read replicas. A mutation's response carries `extensions.position`: a WAL position
//! at or after its commit. A later request that sends `extensions: {"consistency": {"atLeast": "<position>"}}` reads
//! only from a replica that has replayed that far (waiting briefly for one), or from the primary. Without replicas
//! every read is on the primary and sees every write: no position is sent, and one passed is accepted and met.

use async_graphql::{Request, Response, ServerError, Value};

use crate::error::{BAD_USER_INPUT, coded};
use crate::store::Store;
use crate::store::replicas::Position;

/// The position a request's reads must see, as request data (`graphql::store` applies it).
#[derive(Clone, Copy, Debug)]
pub struct ReadFloor(pub Position);

/// Takes `extensions.consistency.atLeast` into the request's data; BAD_USER_INPUT when it is not a position.
pub fn take_floor(request: &mut Request) -> Result<(), ServerError> {
    let Some(consistency) = request.extensions.0.get("consistency") else { return Ok(()) };
    let bad = |why: String| {
        coded(BAD_USER_INPUT, format!("extensions.consistency {why}")).into_server_error(Default::default())
    };
    let at_least = match consistency {
        Value::Object(fields) => fields.get("atLeast"),
        _ => return Err(bad("must be an object such as {\"atLeast\": \"16/B374D848\"}".into())),
    };
    let position = match at_least {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(text)) => text.parse::<Position>().map_err(|why| bad(format!("atLeast: {why}")))?,
        Some(_) => return Err(bad("atLeast must be a string: the position a mutation's response carried".into())),
    };
    request.data.insert(ReadFloor(position));
    Ok(())
}

/// Adds `extensions.position` to a mutation's response when reads may go to replicas.
pub async fn add_position(store: &Store, response: &mut Response) {
    if store.replicas().is_none() {
        return;
    }
    match store.position().await {
        Ok(position) => {
            response.extensions.insert("position".into(), Value::String(position.to_string()));
        }
        // The write stands; the client then reads from the primary or waits for a replica as it would without it.
        Err(err) => tracing::warn!(%err, "the WAL position after a mutation could not be read"),
    }
}
