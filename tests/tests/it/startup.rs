//! `flowtrace serve` reports what keeps it from serving before it starts, initialises or migrates any database.

use std::time::Duration;

use crate::process::{TempFolder, flowtrace, run, text};

const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn a_server_that_cannot_serve_says_so_before_touching_any_database() {
    let folder = TempFolder::new("startup-order");
    let data = folder.0.join("data");
    let data_dir = data.to_str().expect("utf-8 path");

    let out = run(flowtrace(&folder.0, &["serve", "--bind", "0.0.0.0:0", "--data-dir", data_dir]), LIMIT).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("without authentication"), "{}", text(&out.stderr));
    assert!(!data.exists(), "no data folder was created for a server that cannot start");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run(flowtrace(&folder.0, &["serve", "--bind", &addr, "--data-dir", data_dir]), LIMIT).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&addr) && stderr.contains("already in use"), "{stderr}");
    assert!(!data.exists(), "no data folder was created for a server that cannot start");

    // The same with the database given by URL: nothing connects (the URL points nowhere, and no wait happens).
    let nowhere = "postgres://nobody:x@127.0.0.1:1/none";
    let out = run(flowtrace(&folder.0, &["serve", "--bind", &addr, "--database-url", nowhere]), LIMIT).await;
    assert!(text(&out.stderr).contains("already in use"), "{}", text(&out.stderr));
}
