//! The session-state stream: a session's node states, first whole, then as changes, each resumable.
//!
//! Its cursor is a `RowMark`: the prefix of the session's rows (traces and events by `seq`, and whether its end
//! committed) a state is computed from. Each read takes the current mark and the state as of it, and sends what
//! differs from the state as of the previous mark, one node at a time, with absolute values: applying a change twice
//! changes nothing. Every change of a read but the last carries the previous mark, so a client that resumes from any
//! change it received is sent the rest of that read again, never less.

use std::collections::HashMap;

use super::Announced;
use super::catch_up::{Batch, Source};
use crate::domain::SessionStatus;
use crate::store::cursor::{decode_tagged, encode_tagged};
use crate::store::time_travel::{AsOf, NodeState, RowMark, WorkflowState};
use crate::store::{Store, StoreResult};

/// What one node's change sets: its state after the change, and which of its fields changed.
#[derive(Clone, Debug)]
pub struct NodeChange {
    pub node: NodeState,
    pub name: bool,
    pub status: bool,
    pub input_count: bool,
    pub output_count: bool,
    pub last_input: bool,
    pub last_output: bool,
    pub last_error: bool,
}

#[derive(Clone, Debug)]
pub enum Change {
    /// The whole state: the first message of a subscription that did not resume.
    Snapshot(Box<WorkflowState>),
    /// One node's changed fields.
    Node(Box<NodeChange>),
    /// Only the session's status changed.
    Session,
}

#[derive(Clone, Debug)]
pub struct StateUpdate {
    pub cursor: String,
    pub session_status: SessionStatus,
    pub change: Change,
}

/// A mark as the client holds it, tied to its session so that it cannot be replayed against another.
pub fn encode(session_id: &str, mark: RowMark) -> String {
    encode_tagged("state", &format!("{}:{}:{}:{session_id}", mark.traces, mark.events, u8::from(mark.ended)))
}

/// BAD_USER_INPUT for a cursor that is not a session-state cursor of this session.
pub fn decode(session_id: &str, cursor: &str) -> StoreResult<RowMark> {
    decode_tagged("state", cursor, |body| {
        let mut parts = body.splitn(4, ':');
        let mut number = || parts.next().and_then(|p| p.parse::<i64>().ok()).filter(|n| *n >= 0);
        let (traces, events, ended) = (number()?, number()?, number()?);
        (parts.next() == Some(session_id) && ended <= 1).then_some(RowMark { traces, events, ended: ended == 1 })
    })
}

pub(super) struct SessionState {
    pub store: Store,
    pub session_id: String,
    /// The mark the client holds: `None` until the first read when it did not resume.
    pub mark: Option<RowMark>,
    /// The node states as of `mark`, once read.
    pub known: Option<Known>,
}

type Known = (SessionStatus, HashMap<String, NodeState>);

/// What differs from `before` in `now`: a change per node, or the session's status alone.
fn changes(before: &Known, now: &WorkflowState) -> Vec<Change> {
    let mut changes: Vec<Change> = now
        .nodes
        .iter()
        .filter_map(|n| {
            let old = before.1.get(&n.node_id);
            let id = |t: &Option<entity::trace::Model>| t.as_ref().map(|t| t.id.clone());
            let change = NodeChange {
                name: old.is_none_or(|o| o.node_name != n.node_name),
                status: old.is_none_or(|o| o.status != n.status),
                input_count: old.is_none_or(|o| o.input_count != n.input_count),
                output_count: old.is_none_or(|o| o.output_count != n.output_count),
                last_input: old.is_none_or(|o| id(&o.last_input) != id(&n.last_input)),
                last_output: old.is_none_or(|o| id(&o.last_output) != id(&n.last_output)),
                last_error: old.is_none_or(|o| id(&o.last_error) != id(&n.last_error)),
                node: n.clone(),
            };
            let any = change.name
                || change.status
                || change.input_count
                || change.output_count
                || change.last_input
                || change.last_output
                || change.last_error;
            any.then(|| Change::Node(Box::new(change)))
        })
        .collect();
    if changes.is_empty() && before.0 != now.session_status {
        changes.push(Change::Session);
    }
    changes
}

impl Source for SessionState {
    type Item = StateUpdate;

    async fn read(&mut self, _: &Announced) -> StoreResult<Batch<StateUpdate>> {
        let Some((mark, session)) = self.store.row_mark(&self.session_id).await? else {
            // Deleted (retention) while followed: nothing more will change.
            return Ok(Batch { items: Vec::new(), more: false });
        };
        if self.mark == Some(mark) {
            return Ok(Batch { items: Vec::new(), more: false });
        }
        let now = self.store.state_as_of(session.clone(), AsOf::Rows(mark)).await?;
        let cursor = encode(&self.session_id, mark);
        let items = match self.mark {
            None => {
                vec![StateUpdate {
                    cursor,
                    session_status: now.session_status,
                    change: Change::Snapshot(Box::new(now.clone())),
                }]
            }
            Some(previous) => {
                let before = match self.known.take() {
                    Some(known) => known,
                    None => {
                        let then = self.store.state_as_of(session, AsOf::Rows(previous)).await?;
                        (then.session_status, then.nodes.into_iter().map(|n| (n.node_id.clone(), n)).collect())
                    }
                };
                let changes = changes(&before, &now);
                let (count, previous) = (changes.len(), encode(&self.session_id, previous));
                changes
                    .into_iter()
                    .enumerate()
                    .map(|(i, change)| StateUpdate {
                        cursor: if i + 1 == count { cursor.clone() } else { previous.clone() },
                        session_status: now.session_status,
                        change,
                    })
                    .collect()
            }
        };
        self.mark = Some(mark);
        self.known = Some((now.session_status, now.nodes.into_iter().map(|n| (n.node_id.clone(), n)).collect()));
        Ok(Batch { items, more: false })
    }

    fn wants(&self, now: &Announced, before: &Announced) -> bool {
        (now.traces, now.events, now.sessions) != (before.traces, before.events, before.sessions)
    }
}
