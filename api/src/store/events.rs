//! Reading events of a session, in `(timestamp, seq)` order.

use chrono::{DateTime, Utc};
use entity::event;

use super::cursor::{EventKey, Page, PageOf, finish, keyset};
use super::traces::check_range;
use super::{Sql, Store, StoreResult};
use crate::domain::EventType;

#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub session_id: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub node_id: Option<String>,
    /// Empty means every type.
    pub event_types: Vec<EventType>,
}

pub const EVENT_COLUMNS: &str =
    "id, timestamp, seq, session_id, workflow_id, node_id, port_id, event_type, data, duration, metadata";

impl EventFilter {
    fn push(&self, sql: &mut Sql) {
        let p = sql.bind(self.session_id.clone());
        sql.push(&format!(" AND session_id = {p}"));
        if let Some(v) = self.from {
            let p = sql.bind(v);
            sql.push(&format!(" AND timestamp >= {p}"));
        }
        if let Some(v) = self.to {
            let p = sql.bind(v);
            sql.push(&format!(" AND timestamp <= {p}"));
        }
        if let Some(v) = &self.node_id {
            let p = sql.bind(v.clone());
            sql.push(&format!(" AND node_id = {p}"));
        }
        if !self.event_types.is_empty() {
            let types: Vec<String> = self.event_types.iter().map(|t| t.as_str().to_owned()).collect();
            let p = sql.bind(types);
            sql.push(&format!(" AND event_type = ANY({p})"));
        }
    }
}

impl Store {
    /// Oldest first. Uses flow_trace_events_session_idx (session_id, timestamp, seq).
    pub async fn events(&self, filter: &EventFilter, page: &Page<EventKey>) -> StoreResult<PageOf<event::Model>> {
        check_range(filter.from, filter.to)?;
        let mut sql = Sql::new(&format!("SELECT {EVENT_COLUMNS} FROM flow_trace_events WHERE TRUE"));
        filter.push(&mut sql);
        keyset(&mut sql, ("timestamp", "seq"), page, false);
        Ok(finish(self.all(sql).await?, page))
    }

    pub async fn count_events(&self, filter: &EventFilter) -> StoreResult<i64> {
        check_range(filter.from, filter.to)?;
        let mut sql = Sql::new("SELECT count(*) AS n FROM flow_trace_events WHERE TRUE");
        filter.push(&mut sql);
        self.count(sql).await
    }
}
