//! The embedded default: a private cluster in a data folder that keeps its data across restarts.

use flowtrace::app::Database;
use flowtrace::config::DatabaseArgs;
use flowtrace::limits::Limits;
use flowtrace::store::sessions::NewSession;

#[tokio::test]
async fn the_embedded_cluster_keeps_its_data_across_restarts() {
    let dir = std::env::temp_dir().join(format!("flowtrace-test-{}-embedded", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = DatabaseArgs { database_url: None, data_dir: Some(dir.clone()), db_max_connections: 4 };

    let db = Database::open(&args).await.expect("first start initialises the cluster");
    assert!(dir.join("pgdata/PG_VERSION").exists());
    db.store.wait_until_reachable(std::time::Duration::from_secs(30)).await.expect("reachable");
    db.store.migrate_up().await.expect("migrate");
    let new = NewSession { workflow_id: "wf".into(), workflow_name: "Flow".into(), ..Default::default() };
    let session = db.store.start_session(&Limits::default(), new).await.expect("session");
    let first_port = db.embedded.as_ref().expect("embedded").port();
    db.close().await;
    assert!(!dir.join("pgdata/postmaster.pid").exists(), "stopped cleanly");

    let db = Database::open(&args).await.expect("second start reuses the folder");
    db.store.wait_until_reachable(std::time::Duration::from_secs(30)).await.expect("reachable");
    let found = db.store.session(&session.id).await.expect("query");
    assert_eq!(found.map(|s| s.workflow_id), Some("wf".to_owned()), "data survived (port was {first_port})");
    db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
