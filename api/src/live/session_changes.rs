//! The session-changes stream: session starts and ends from the change log, read by snapshot mark. It feeds the
//! `sessionUpdates` subscription and webhook delivery alike.
//!
//! The mark is a snapshot (`pg_current_snapshot()`); a read returns exactly the changes that committed after the
//! mark and before the read's own snapshot, which becomes the next mark. Every change is returned once, in `seq`
//! order, including those whose notification was lost.

use entity::session;

use super::Announced;
use super::catch_up::{Batch, Source};
use crate::store::Store;
use crate::store::StoreResult;
use crate::store::live::{Follow, SessionChange};

/// One change and the session as it is now (read just after the change was found).
#[derive(Clone, Debug)]
pub struct SessionUpdate {
    pub change: SessionChange,
    pub session: session::Model,
}

/// The changes one read found, and the mark after them: a consumer that stored `mark` resumes after these changes.
#[derive(Clone, Debug)]
pub struct ChangeBatch {
    pub updates: Vec<SessionUpdate>,
    pub mark: String,
}

pub(super) struct SessionChanges {
    pub store: Store,
    pub follow: Follow,
    /// The snapshot up to which every change was returned.
    pub mark: String,
}

impl Source for SessionChanges {
    type Item = ChangeBatch;

    async fn read(&mut self, _: &Announced) -> StoreResult<Batch<ChangeBatch>> {
        let (changes, mark) = self.store.session_changes_since(&self.mark, &self.follow).await?;
        let sessions = if changes.is_empty() {
            Default::default()
        } else {
            self.store.sessions_by_id(changes.iter().map(|c| c.session_id.clone()).collect()).await?
        };
        // A session deleted by retention since has nothing left to tell.
        let updates = changes
            .into_iter()
            .filter_map(|change| {
                let session = sessions.get(&change.session_id)?.clone();
                Some(SessionUpdate { change, session })
            })
            .collect();
        // Only a read that got through moves the mark: a failed one is repeated whole, so nothing is returned twice.
        self.mark = mark.clone();
        Ok(Batch { items: vec![ChangeBatch { updates, mark }], more: false })
    }

    fn wants(&self, now: &Announced, before: &Announced) -> bool {
        now.sessions != before.sessions
    }
}
