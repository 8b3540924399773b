//! Any number of flowtrace processes on one embedded data folder (`serve`, `seed`, `migrate`, `psql`, …).
//!
//! Each process that uses the cluster holds a shared `flock` on `users.lock` in the folder for as long as it uses it;
//! the kernel drops it when the process ends, however it ends. Starting and stopping happen under an exclusive lock on
//! `start.lock`, so they never interleave: a process that is done gives up its shared lock and, still under
//! `start.lock`, tries an exclusive lock on `users.lock`. Only when that succeeds (no other process holds a shared one)
//! does it stop the cluster. A process arriving meanwhile waits on `start.lock`, then finds the cluster either running
//! (and shares it) or stopped (and starts it).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::embedded_pg::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};

const START_LOCK: &str = "start.lock";
const USERS_LOCK: &str = "users.lock";

/// This process's use of the cluster in a data folder.
pub struct SharedCluster {
    pg: EmbeddedPostgres,
    /// Holds the shared lock on `users.lock` while open.
    user: File,
}

/// What `close` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    Stopped,
    /// Another flowtrace process still uses the cluster.
    LeftRunning,
}

impl SharedCluster {
    /// Starts the cluster in `dir` (initialising it first if needed), or joins the one already running there.
    pub async fn open(dir: &Path, options: EmbeddedOptions) -> Result<SharedCluster, EmbeddedError> {
        tokio::fs::create_dir_all(dir).await?;
        let start = lock(dir.join(START_LOCK), Lock::Exclusive).await?;
        let user = lock(dir.join(USERS_LOCK), Lock::Shared).await?;
        let pg = EmbeddedPostgres::start(dir, options).await;
        drop(start);
        Ok(SharedCluster { pg: pg?, user })
    }

    pub fn postgres(&self) -> &EmbeddedPostgres {
        &self.pg
    }

    /// Stops the cluster unless another flowtrace process still uses it.
    pub async fn close(self) -> Result<Closed, EmbeddedError> {
        let SharedCluster { pg, user } = self;
        let start = lock(pg.dir().join(START_LOCK), Lock::Exclusive).await?;
        drop(user);
        let users = open_lock_file(&pg.dir().join(USERS_LOCK))?;
        let closed = match users.try_lock() {
            Ok(()) => {
                pg.stop().await?;
                Closed::Stopped
            }
            Err(TryLockError::WouldBlock) => Closed::LeftRunning,
            Err(TryLockError::Error(err)) => return Err(err.into()),
        };
        drop(users);
        drop(start);
        Ok(closed)
    }
}

enum Lock {
    Shared,
    Exclusive,
}

/// Waits for the lock without blocking the runtime.
async fn lock(path: PathBuf, kind: Lock) -> Result<File, EmbeddedError> {
    let locked = tokio::task::spawn_blocking(move || {
        let file = open_lock_file(&path)?;
        match kind {
            Lock::Shared => file.lock_shared()?,
            Lock::Exclusive => file.lock()?,
        }
        std::io::Result::Ok(file)
    })
    .await
    .map_err(|err| EmbeddedError::Command {
        what: "waiting for the data folder lock".into(),
        detail: err.to_string(),
    })?;
    Ok(locked?)
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}
