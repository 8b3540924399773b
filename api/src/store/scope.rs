//! Who a read is for. A caller limited to its own sessions, or to some workflows, reads through the
//! `flowtrace_scoped` views (migration 13) on connections of its own pool: every query the store runs for it sees
//! only its rows, whichever table the query names. Naming the caller is per transaction; a connection of that pool
//! that names nobody sees no rows at all.

use sqlx::PgConnection;

use super::{StoreError, StoreResult};

/// The rows a limited caller may see: sessions whose `userId` is its `user`, and everything of `workflows`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    pub user: Option<String>,
    pub workflows: Vec<String>,
}

impl Scope {
    /// Names the caller for the rest of the transaction on `conn`.
    pub(super) async fn apply(&self, conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query(
            "SELECT set_config('flowtrace.user', COALESCE($1, ''), true),
                set_config('flowtrace.workflows', $2::text[]::text, true)",
        )
        .bind(&self.user)
        .bind(&self.workflows)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Aggregates count every user's sessions: a caller sees them only for workflows granted to it whole. Without a
    /// workflow the aggregates' views show the granted ones; with no grant at all there is nothing to show.
    pub fn check_aggregate(&self, workflow_id: Option<&str>) -> StoreResult<()> {
        let granted = match workflow_id {
            Some(w) => self.workflows.iter().any(|g| g == w),
            None => !self.workflows.is_empty(),
        };
        if granted {
            return Ok(());
        }
        let what = workflow_id.map_or("any workflow".to_owned(), |w| format!("workflow {w}"));
        Err(StoreError::Forbidden(format!(
            "aggregates count every user's sessions, and {what} is not granted to these credentials; \
             sessionHistory and sessionReport cover a caller's own sessions"
        )))
    }
}
