//! The store's pools: in a quiet spell after a burst, reads run on the few connections kept warm for them, not on
//! each of the many the burst opened in turn.

use flowtrace::domain::SessionStatus;
use flowtrace::store::Store;
use flowtrace::store::cursor::Page;
use flowtrace::store::sessions::SessionFilter;

use crate::harness::{Kind, test_db};

/// Backends of this database whose latest statement contains `marker`.
async fn backends_that_ran(store: &Store, marker: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND query LIKE '%' || $1 || '%' AND query NOT LIKE '%pg_stat_activity%'",
    )
    .bind(marker)
    .fetch_one(store.pool())
    .await
    .expect("pg_stat_activity")
}

#[tokio::test]
async fn quiet_reads_after_a_burst_run_on_a_few_warm_connections() {
    let db = test_db(Kind::Default).await;
    let store = Store::connect_lazy(db.store.url(), 16).expect("pool");
    let page = Page { after: None, before: None, limit: 10, from_end: false };
    let burst = SessionFilter { workflow_id: Some("burst".into()), ..Default::default() };
    let reads = (0..64).map(|_| store.sessions(&burst, &page));
    for read in futures::future::join_all(reads).await {
        read.expect("burst read");
    }
    let opened = backends_that_ran(&store, "workflow_id = $").await;
    assert!(opened >= 6, "the burst should have opened many connections, it ran on {opened}");

    let quiet = SessionFilter { status: Some(SessionStatus::Completed), ..Default::default() };
    for _ in 0..40 {
        store.sessions(&quiet, &page).await.expect("quiet read");
    }
    let used = backends_that_ran(&store, "status = $").await;
    assert!((1..=2).contains(&used), "40 reads one after another ran on {used} of {opened} connections");
    store.close().await;
}
