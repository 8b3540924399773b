//! What a write must satisfy before anything is stored: batch sizes, names, text lengths, times, JSON size and
//! nesting, ids. Errors name the item and field (`traces[3].duration`) so a client can fix it.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::{NewEvent, NewTrace};
use crate::limits::Limits;
use crate::store::ids::check_id;
use crate::store::{StoreError, StoreResult};

/// Checks one batch item by item; errors name the item (`traces[3].duration`) so a client can fix it.
struct Checker<'a> {
    pub limits: &'a Limits,
    pub list: &'static str,
}

impl Checker<'_> {
    pub fn batch(&self, len: usize) -> StoreResult<()> {
        if len == 0 {
            return Err(StoreError::BadInput(format!("{} must not be empty", self.list)));
        }
        if len > self.limits.max_batch {
            return Err(StoreError::LimitExceeded(format!(
                "{} has {len} items; the limit (max_batch) is {} per call: split the batch",
                self.list, self.limits.max_batch
            )));
        }
        Ok(())
    }

    pub fn name(&self, i: usize, field: &str, value: Option<&str>, required: bool) -> StoreResult<()> {
        check_name(self.limits, || format!("{}[{i}].{field}", self.list), value, required)
    }

    pub fn text(&self, i: usize, field: &str, value: Option<&str>) -> StoreResult<()> {
        match value {
            Some(v) if v.chars().count() > self.limits.max_text_chars => Err(StoreError::LimitExceeded(format!(
                "{}[{i}].{field} is longer than {} characters (max_text_chars)",
                self.list, self.limits.max_text_chars
            ))),
            _ => Ok(()),
        }
    }

    pub fn time(&self, i: usize, field: &str, at: DateTime<Utc>) -> StoreResult<()> {
        check_time(at).map_err(|why| StoreError::BadInput(format!("{}[{i}].{field} {why}", self.list)))
    }

    pub fn duration(&self, i: usize, value: Option<f64>) -> StoreResult<()> {
        match value {
            Some(d) if !d.is_finite() || d < 0.0 => Err(StoreError::BadInput(format!(
                "{}[{i}].duration must be a finite number of milliseconds >= 0, got {d}",
                self.list
            ))),
            _ => Ok(()),
        }
    }

    /// Serialises JSON once, checking its size and nesting.
    pub fn json(&self, i: usize, field: &str, value: Option<&Json>) -> StoreResult<Option<String>> {
        let Some(value) = value else { return Ok(None) };
        if json_depth(value) > self.limits.max_json_depth {
            return Err(StoreError::LimitExceeded(format!(
                "{}[{i}].{field} nests deeper than {} levels (max_json_depth)",
                self.list, self.limits.max_json_depth
            )));
        }
        let text = value.to_string();
        if text.len() > self.limits.max_payload_bytes {
            return Err(StoreError::LimitExceeded(format!(
                "{}[{i}].{field} is {} bytes of JSON; the limit (max_payload_bytes) is {}",
                self.list,
                text.len(),
                self.limits.max_payload_bytes
            )));
        }
        Ok(Some(text))
    }

    /// Each given id keeps the id rule and appears once in the batch.
    pub fn ids<'a>(&self, ids: impl Iterator<Item = Option<&'a str>>) -> StoreResult<()> {
        let mut seen = HashSet::new();
        for (i, id) in ids.enumerate() {
            let Some(id) = id else { continue };
            check_id(|| format!("{}[{i}].id", self.list), id)?;
            if !seen.insert(id) {
                return Err(StoreError::BadInput(format!("{}[{i}].id {id} appears twice in this batch", self.list)));
            }
        }
        Ok(())
    }
}

/// The rule for identifiers and names: bounded length, and not blank when required. `label` names the field in the
/// error and is only built when there is one.
pub(crate) fn check_name(
    limits: &Limits,
    label: impl Fn() -> String,
    value: Option<&str>,
    required: bool,
) -> StoreResult<()> {
    match value {
        Some(v) if v.chars().count() > limits.max_name_chars => Err(StoreError::LimitExceeded(format!(
            "{} is longer than {} characters (max_name_chars)",
            label(),
            limits.max_name_chars
        ))),
        Some(v) if required && v.trim().is_empty() => {
            Err(StoreError::BadInput(format!("{} must not be empty", label())))
        }
        None if required => Err(StoreError::BadInput(format!("{} is required", label()))),
        _ => Ok(()),
    }
}

/// Timestamps outside 2000–2100 are taken as client bugs (seconds sent as milliseconds, zero dates).
pub fn check_time(at: DateTime<Utc>) -> Result<(), String> {
    let lo = DateTime::from_timestamp(946_684_800, 0).unwrap_or_default(); // 2000-01-01
    let hi = DateTime::from_timestamp(4_102_444_800, 0).unwrap_or_default(); // 2100-01-01
    if at < lo || at >= hi {
        return Err(format!("{} is outside the accepted range 2000-01-01..2100-01-01", at.to_rfc3339()));
    }
    Ok(())
}

pub(crate) fn json_depth(value: &Json) -> usize {
    // Iterative, so a hostile payload cannot overflow the stack here.
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match v {
            Json::Array(items) => stack.extend(items.iter().map(|i| (i, depth + 1))),
            Json::Object(map) => stack.extend(map.values().map(|i| (i, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// A batch of traces for `session_id`; returns each item's payload as JSON text.
pub(super) fn traces(limits: &Limits, session_id: &str, traces: &[NewTrace]) -> StoreResult<Vec<Option<String>>> {
    check_id(|| "sessionId".into(), session_id)?;
    let check = Checker { limits, list: "traces" };
    check.batch(traces.len())?;
    check.ids(traces.iter().map(|t| t.id.as_deref()))?;
    let mut payloads = Vec::with_capacity(traces.len());
    for (i, t) in traces.iter().enumerate() {
        if let Some(parent) = &t.parent_trace_id {
            check_id(|| format!("traces[{i}].parentTraceId"), parent)?;
        }
        check.time(i, "timestamp", t.timestamp)?;
        check.duration(i, t.duration)?;
        for (field, value, required) in [
            ("source.nodeId", Some(t.source.node_id.as_str()), true),
            ("target.nodeId", Some(t.target.node_id.as_str()), true),
            ("source.nodeName", t.source.node_name.as_deref(), false),
            ("source.nodeType", t.source.node_type.as_deref(), false),
            ("source.portId", t.source.port_id.as_deref(), false),
            ("source.portName", t.source.port_name.as_deref(), false),
            ("source.portType", t.source.port_type.as_deref(), false),
            ("target.nodeName", t.target.node_name.as_deref(), false),
            ("target.nodeType", t.target.node_type.as_deref(), false),
            ("target.portId", t.target.port_id.as_deref(), false),
            ("target.portName", t.target.port_name.as_deref(), false),
            ("target.portType", t.target.port_type.as_deref(), false),
            ("data.type", t.data_type.as_deref(), false),
            ("error.code", t.error_code.as_deref(), false),
            ("graphId", t.graph_id.as_deref(), false),
            ("graphName", t.graph_name.as_deref(), false),
        ] {
            check.name(i, field, value, required)?;
        }
        if t.graph_id.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(StoreError::BadInput(format!("traces[{i}].graphId must not be empty")));
        }
        check.text(i, "data.preview", t.preview.as_deref())?;
        check.text(i, "error.message", t.error_message.as_deref())?;
        check.text(i, "error.stack", t.error_stack.as_deref())?;
        if t.size.is_some_and(|s| s < 0) {
            return Err(StoreError::BadInput(format!("traces[{i}].data.size must be >= 0")));
        }
        if t.depth.is_some_and(|d| d < 0) {
            return Err(StoreError::BadInput(format!("traces[{i}].depth must be >= 0")));
        }
        payloads.push(check.json(i, "data.payload", t.payload.as_ref())?);
    }
    Ok(payloads)
}

/// A batch of events for `session_id`; returns each item's data and metadata as JSON text.
pub(super) fn events(limits: &Limits, session_id: &str, events: &[NewEvent]) -> StoreResult<EventJson> {
    check_id(|| "sessionId".into(), session_id)?;
    let check = Checker { limits, list: "events" };
    check.batch(events.len())?;
    check.ids(events.iter().map(|e| e.id.as_deref()))?;
    let mut data = Vec::with_capacity(events.len());
    let mut metadata = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        check.time(i, "timestamp", e.timestamp)?;
        check.duration(i, e.duration)?;
        check.name(i, "nodeId", Some(&e.node_id), true)?;
        check.name(i, "portId", e.port_id.as_deref(), false)?;
        data.push(check.json(i, "data", e.data.as_ref())?);
        metadata.push(check.json(i, "metadata", e.metadata.as_ref())?);
    }
    Ok((data, metadata))
}

/// Each event's data and metadata as JSON text.
type EventJson = (Vec<Option<String>>, Vec<Option<String>>);
