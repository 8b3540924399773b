//! `flowtrace db url` and `flowtrace psql`: reaching the database by hand.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::app::Database;
use crate::config::DatabaseArgs;
use crate::embedded_pg::{default_data_dir, find_bindir, stored_port, stored_url};

/// Prints `DATABASE_URL`, or the embedded cluster's URL from its data folder (its port never changes). Starts nothing.
pub async fn print_url(args: &DatabaseArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.database_url {
        println!("{url}");
        return Ok(());
    }
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let url = stored_url(&dir, "flowtrace").await?;
    println!("{url}");
    if let Some(port) = stored_port(&dir).await?
        && tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err()
    {
        eprintln!("note: the embedded PostgreSQL is not running now; `flowtrace serve` or `flowtrace psql` starts it");
    }
    Ok(())
}

/// Runs psql on the database with `extra` arguments; exits with psql's status. The embedded cluster is shared like
/// any other use (see `embedded_shared`): started if needed, stopped afterwards unless another process uses it.
pub async fn psql(args: &DatabaseArgs, extra: Vec<String>) -> anyhow::Result<()> {
    let db = Database::open(args).await?;
    let mut cmd = match &db.embedded {
        Some(cluster) => {
            let pg = cluster.postgres();
            let mut cmd = tokio::process::Command::new(pg.bindir().join("psql"));
            // The password travels in the environment, not on the command line other users can read.
            cmd.env("PGPASSWORD", pg.password()).arg(pg.url_without_password("flowtrace"));
            cmd
        }
        None => {
            let psql = find_bindir().await.map(|dir| dir.join("psql")).unwrap_or_else(|| PathBuf::from("psql"));
            let mut cmd = tokio::process::Command::new(psql);
            cmd.arg(db.store.url());
            cmd
        }
    };
    let status = cmd.args(&extra).status().await.context("running psql");
    db.close().await;
    let status = status?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
