//! The events stream: a session's events (optionally of some types) by `seq`.

use entity::event;

use super::PAGE;
use super::catch_up::{Batch, Source};
use crate::domain::EventType;
use crate::store::notify::{Kind, Wakeup};
use crate::store::{Store, StoreResult};

pub(super) struct Events {
    pub store: Store,
    pub session_id: String,
    pub types: Vec<EventType>,
    /// The `seq` of the last event delivered.
    pub cursor: i64,
}

impl Source for Events {
    type Item = event::Model;

    async fn read(&mut self, _woken_for: i64) -> StoreResult<Batch<event::Model>> {
        let rows = self.store.events_after(&self.session_id, &self.types, self.cursor, PAGE).await?;
        if let Some(last) = rows.last() {
            self.cursor = last.seq;
        }
        let more = rows.len() as i64 == PAGE;
        Ok(Batch { items: rows, more })
    }

    fn wants(&self, w: &Wakeup) -> bool {
        w.kind == Kind::Event && w.session_id == self.session_id && w.seq > self.cursor
    }
}
