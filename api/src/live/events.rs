//! The events stream: a session's events (optionally of some types) by `seq`.

use entity::event;

use super::catch_up::{Batch, Source};
use super::{Announced, PAGE};
use crate::domain::EventType;
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

    async fn read(&mut self, _: &Announced) -> StoreResult<Batch<event::Model>> {
        let rows = self.store.events_after(&self.session_id, &self.types, self.cursor, PAGE).await?;
        if let Some(last) = rows.last() {
            self.cursor = last.seq;
        }
        let more = rows.len() as i64 == PAGE;
        Ok(Batch { items: rows, more })
    }

    fn wants(&self, now: &Announced, before: &Announced) -> bool {
        now.events > before.events && now.events > self.cursor
    }
}
