//! Several real `flowtrace` processes on one embedded data folder, and its port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::Connection;

use crate::process::{Server, TempFolder, flowtrace, run, text};

const LIMIT: Duration = Duration::from_secs(180);

/// Polls `/readyz` and the `health` query until told to stop; counts the answers and the failures (with the first).
fn watch(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
        let (mut answers, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            match http.get(format!("{base}/readyz")).send().await {
                Ok(res) if res.status() == 200 => answers += 1,
                other => failures.push(format!("readyz: {other:?}")),
            }
            let health = http.post(format!("{base}/graphql")).json(&json!({ "query": "{ health { connected } }" }));
            match health.send().await {
                Ok(res) => match res.json::<Value>().await {
                    Ok(body) if body["data"]["health"]["connected"] == json!(true) => answers += 1,
                    other => failures.push(format!("health: {other:?}")),
                },
                Err(err) => failures.push(format!("health: {err}")),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (answers, failures)
    })
}

#[tokio::test]
async fn seed_migrate_and_policies_next_to_a_running_server_leave_its_database_running() {
    let folder = TempFolder::new("shared-folder");
    let data = folder.0.join("data");
    let server = Server::start(&folder.0, &data).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(server.base.clone(), stop.clone());

    let data_dir = data.to_str().expect("utf-8 path");
    let commands: [&[&str]; 4] = [
        &["seed", "--sessions", "4", "--traces-per-session", "30"],
        &["migrate", "status"],
        &["policies", "show"],
        &["migrate", "status"],
    ];
    for args in commands {
        let mut cmd = flowtrace(&folder.0, args);
        cmd.args(["--data-dir", data_dir]);
        let out = run(cmd, LIMIT).await;
        assert!(out.status.success(), "flowtrace {args:?} failed: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("left running: another flowtrace process uses it"),
            "flowtrace {args:?} left the server's cluster running: {}",
            text(&out.stderr)
        );
        if args[0] == "migrate" {
            assert!(text(&out.stdout).contains("applied"), "{}", text(&out.stdout));
        }
    }
    // Two processes at once as well.
    let both: Vec<_> = (0..2)
        .map(|_| {
            let mut cmd = flowtrace(&folder.0, &["migrate", "status"]);
            cmd.args(["--data-dir", data_dir]);
            run(cmd, LIMIT)
        })
        .collect();
    for out in futures::future::join_all(both).await {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (answers, failures) = watcher.await.expect("join");
    assert!(failures.is_empty(), "the server stopped answering ({} failures), first: {}", failures.len(), failures[0]);
    assert!(answers > 10, "the server was polled throughout ({answers} answers)");

    // The server still works, and sees what the seed wrote.
    let http = reqwest::Client::new();
    let body: Value = http
        .post(format!("{}/graphql", server.base))
        .json(&json!({ "query": "{ sessions { totalCount } }" }))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(body["data"]["sessions"]["totalCount"], 4, "{body}");

    // The last user stops the cluster.
    let log = server.stop().await;
    assert!(log.contains("embedded PostgreSQL stopped"), "{log}");
    assert!(!data.join("pgdata/postmaster.pid").exists(), "the cluster is stopped once nobody uses it");
}

#[tokio::test]
async fn a_data_folder_keeps_its_port_and_db_url_and_psql_reach_it() {
    let folder = TempFolder::new("port");
    let data = folder.0.join("data");
    let data_dir = data.to_str().expect("utf-8 path");
    let db_url = || {
        let mut cmd = flowtrace(&folder.0, &["db", "url", "--data-dir", data_dir]);
        cmd.stderr(std::process::Stdio::null());
        run(cmd, LIMIT)
    };
    let out = db_url().await;
    assert!(!out.status.success(), "no URL before the cluster exists");

    let server = Server::start(&folder.0, &data).await;
    let out = db_url().await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = text(&out.stdout).trim().to_owned();
    let port: u16 = std::fs::read_to_string(data.join("port")).expect("port file").trim().parse().expect("a port");
    assert!(url.contains(&format!("@127.0.0.1:{port}/flowtrace")), "{url}");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("the printed URL connects");
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM flow_trace_sessions").fetch_one(&mut conn).await.expect("query");
    assert_eq!(sessions, 0);
    conn.close().await.expect("close");

    let mut psql = flowtrace(&folder.0, &["psql", "--data-dir", data_dir, "-tA", "-c", "SELECT 40 + 2"]);
    psql.env("PAGER", "cat");
    let out = run(psql, LIMIT).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "42");
    let log = server.stop().await;
    assert!(!data.join("pgdata/postmaster.pid").exists(), "stopped: {log}");

    // A restart uses the same port, so the same URL.
    let server = Server::start(&folder.0, &data).await;
    let again = db_url().await;
    assert_eq!(text(&again.stdout).trim(), url, "the same URL after a restart");
    sqlx::PgConnection::connect(&url).await.expect("connects after the restart").close().await.expect("close");
    server.stop().await;

    // Another program on that port: a clear error naming it, not a wait.
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("take the port");
    let out = run(flowtrace(&folder.0, &["migrate", "status", "--data-dir", data_dir]), LIMIT).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("port {port}")) && stderr.contains("in use by another program"), "{stderr}");
    drop(squatter);
}
