//! The embedded default: a private PostgreSQL cluster started from this machine's own binaries.
//!
//! Layout of the data folder: `pgdata/` (the cluster), `password` (the generated superuser password, mode 0600), `port`
//! (the loopback port, chosen free on the first start and kept, so the folder's URL never changes) and `postgres.log`.
//! The cluster listens on that port with password auth and no Unix socket. PostgreSQL refuses to run as root, so when
//! this process is root the cluster runs as the `postgres` system user, which then owns the folder. A cluster left
//! running by an earlier process is reused as it is. Sharing one folder between processes: `embedded_shared`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use rand::distr::{Alphanumeric, SampleString};
use tokio::process::Command;

const SUPERUSER: &str = "flowtrace";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("no PostgreSQL binaries found: install PostgreSQL (e.g. Debian's postgresql-15) or set DATABASE_URL")]
    NoBinaries,
    #[error("running as root, but there is no unprivileged `postgres` user to run the embedded cluster as")]
    NoPostgresUser,
    #[error(
        "port {port} of the embedded PostgreSQL in {dir} is in use by another program: stop that program, or write \
         a free port number into {dir}/port"
    )]
    PortTaken { port: u16, dir: String },
    #[error("no embedded PostgreSQL in {0} yet: start it once with `flowtrace serve`")]
    NotInitialised(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How to start the cluster.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Preload TimescaleDB when the extension is installed.
    pub timescaledb: bool,
    /// Extra `-c name=value` settings, e.g. `fsync=off` for throwaway test clusters.
    pub settings: Vec<(String, String)>,
    /// Libraries to preload besides TimescaleDB (the benchmark's `pg_stat_statements`).
    pub preload: Vec<String>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { timescaledb: true, settings: Vec::new(), preload: Vec::new() }
    }
}

#[derive(Clone, Debug)]
pub struct EmbeddedPostgres {
    dir: PathBuf,
    bindir: PathBuf,
    run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    options: EmbeddedOptions,
    port: u16,
    password: String,
    timescaledb: bool,
}

impl EmbeddedPostgres {
    /// Initialises the cluster if the folder holds none, then starts it (or adopts the one already running there).
    pub async fn start(dir: &Path, options: EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bindir = find_bindir().await.ok_or(EmbeddedError::NoBinaries)?;
        let run_as = if nix::unistd::Uid::effective().is_root() {
            let user = nix::unistd::User::from_name("postgres").ok().flatten().ok_or(EmbeddedError::NoPostgresUser)?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        tokio::fs::create_dir_all(dir).await?;
        let dir = tokio::fs::canonicalize(dir).await?;
        let timescaledb_installed = timescaledb_installed(&bindir).await;
        let mut pg = EmbeddedPostgres {
            dir,
            bindir,
            run_as,
            timescaledb: options.timescaledb && timescaledb_installed,
            options,
            port: 0,
            password: String::new(),
        };
        pg.init_if_needed().await?;
        pg.password = tokio::fs::read_to_string(pg.dir.join("password")).await?.trim().to_owned();
        match pg.running_port().await {
            Some(port) => {
                pg.port = port;
                if stored_port(&pg.dir).await? != Some(port) {
                    store_port(&pg.dir, port).await?;
                }
                tracing::info!(dir = %pg.dir.display(), port, "reusing the embedded PostgreSQL already running");
            }
            None => pg.start_server().await?,
        }
        Ok(pg)
    }

    /// Starts a hot standby of this cluster in `dir`, streaming from it: the first time, a base backup
    /// (`pg_basebackup -R`, which also writes how to reach the primary); the same options as this cluster. For
    /// trying read replicas on one machine (the tests and the benchmark).
    pub async fn start_replica(&self, dir: &Path) -> Result<EmbeddedPostgres, EmbeddedError> {
        tokio::fs::create_dir_all(dir).await?;
        let dir = tokio::fs::canonicalize(dir).await?;
        let password_file = dir.join("password");
        tokio::fs::write(&password_file, &self.password).await?;
        set_private(&password_file).await?;
        if let Some((uid, gid)) = self.run_as {
            nix::unistd::chown(&dir, Some(uid), Some(gid)).map_err(std::io::Error::from)?;
            nix::unistd::chown(&password_file, Some(uid), Some(gid)).map_err(std::io::Error::from)?;
        }
        let mut replica = EmbeddedPostgres { dir, port: 0, ..self.clone() };
        if !tokio::fs::try_exists(replica.pgdata().join("PG_VERSION")).await? {
            let out = self
                .command(&self.bindir.join("pg_basebackup"))
                .arg("-D")
                .arg(replica.pgdata())
                .args(["-R", "-X", "stream", "-c", "fast", "-d"])
                .arg(self.url_without_password("postgres"))
                .env("PGPASSWORD", &self.password)
                .output()
                .await?;
            if !out.status.success() {
                return Err(command_error("pg_basebackup", &out));
            }
        }
        replica.start_server().await?;
        Ok(replica)
    }

    /// Starts the server again after `stop`: same folder, same port, so existing pools reconnect by themselves.
    pub async fn restart(&mut self) -> Result<(), EmbeddedError> {
        if let Some(port) = self.running_port().await {
            self.port = port;
            return Ok(());
        }
        self.start_server().await
    }

    /// Fast shutdown: disconnects clients, checkpoints, exits.
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        let pgdata = self.pgdata();
        let out = self
            .command(&self.bindir.join("pg_ctl"))
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(&pgdata)
            .output()
            .await?;
        if !out.status.success() && self.running_port().await.is_some() {
            return Err(command_error("pg_ctl stop", &out));
        }
        Ok(())
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }

    /// `url` without the password, for programs given it in `PGPASSWORD`.
    pub fn url_without_password(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the cluster was started with TimescaleDB preloaded.
    pub fn timescaledb_preloaded(&self) -> bool {
        self.timescaledb
    }

    /// For throwaway clusters: a watcher that stops the cluster (and deletes its folder) once process `pid` is gone,
    /// even if that process is killed.
    pub fn stop_when_process_exits(&self, pid: u32, remove_dir: bool) -> Result<(), EmbeddedError> {
        let pg_ctl = self.bindir.join("pg_ctl");
        let mut script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; '{}' stop -m immediate -D '{}' >/dev/null 2>&1",
            pg_ctl.display(),
            self.pgdata().display()
        );
        if remove_dir {
            script.push_str(&format!("; rm -rf '{}'", self.dir.display()));
        }
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd.spawn()?;
        Ok(())
    }

    fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null()).kill_on_drop(false);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    async fn init_if_needed(&self) -> Result<(), EmbeddedError> {
        let pgdata = self.pgdata();
        if tokio::fs::try_exists(pgdata.join("PG_VERSION")).await? {
            return Ok(());
        }
        let password_file = self.dir.join("password");
        let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
        tokio::fs::write(&password_file, &password).await?;
        set_private(&password_file).await?;
        if let Some((uid, gid)) = self.run_as {
            nix::unistd::chown(&self.dir, Some(uid), Some(gid)).map_err(std::io::Error::from)?;
            nix::unistd::chown(&password_file, Some(uid), Some(gid)).map_err(std::io::Error::from)?;
        }
        tracing::info!(dir = %pgdata.display(), "initialising the embedded PostgreSQL cluster");
        let out = self
            .command(&self.bindir.join("initdb"))
            .arg("-D")
            .arg(&pgdata)
            .args(["-U", SUPERUSER, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", password_file.display()))
            .output()
            .await?;
        if !out.status.success() {
            return Err(command_error("initdb", &out));
        }
        Ok(())
    }

    async fn start_server(&mut self) -> Result<(), EmbeddedError> {
        if self.port == 0 {
            self.port = match stored_port(&self.dir).await? {
                Some(port) => port,
                None => {
                    let port = free_port()?;
                    store_port(&self.dir, port).await?;
                    port
                }
            };
        }
        // PostgreSQL would only say so in its log, after a wait; this names the folder and the way out.
        if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            return Err(EmbeddedError::PortTaken { port: self.port, dir: self.dir.display().to_string() });
        }
        let mut settings = vec![
            format!("-p {}", self.port),
            "-c listen_addresses=127.0.0.1".to_owned(),
            "-c unix_socket_directories=''".to_owned(),
        ];
        let mut preload = self.options.preload.clone();
        if self.timescaledb {
            preload.insert(0, "timescaledb".into());
            settings.push("-c timescaledb.telemetry_level=off".into());
            // The default 8 worker processes are too few for the scheduler to start several policy jobs at once
            // ("failed to start job"); leave room for them and for parallel query.
            settings.push("-c max_worker_processes=32".into());
            settings.push("-c timescaledb.max_background_workers=16".into());
        }
        if !preload.is_empty() {
            settings.push(format!("-c shared_preload_libraries={}", preload.join(",")));
        }
        for (name, value) in &self.options.settings {
            settings.push(format!("-c {name}={value}"));
        }
        let log = self.dir.join("postgres.log");
        let out = self
            .command(&self.bindir.join("pg_ctl"))
            .args(["start", "-w", "-t", "120", "-D"])
            .arg(self.pgdata())
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(settings.join(" "))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await?;
        if !out.status.success() {
            let tail = tokio::fs::read_to_string(&log).await.unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let detail = format!(
                "{}; postgres.log ends with:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            return Err(EmbeddedError::Command { what: "pg_ctl start".into(), detail });
        }
        Ok(())
    }

    /// The port of a server running on this folder, from `postmaster.pid` (line 4), if one is running.
    async fn running_port(&self) -> Option<u16> {
        let status = self
            .command(&self.bindir.join("pg_ctl"))
            .args(["status", "-D"])
            .arg(self.pgdata())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .ok()?;
        if !status.success() {
            return None;
        }
        let pid_file = tokio::fs::read_to_string(self.pgdata().join("postmaster.pid")).await.ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }
}

/// Where flowtrace keeps its embedded cluster when no `--data-dir` is given. Root's home is not readable by the
/// `postgres` user the cluster then runs as, so root uses `/var/lib/flowtrace`.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/var/lib/flowtrace");
    }
    dirs::data_local_dir().unwrap_or_else(std::env::temp_dir).join("flowtrace")
}

/// The URL of the cluster in `dir`, from its stored port and password, without starting anything.
pub async fn stored_url(dir: &Path, database: &str) -> Result<String, EmbeddedError> {
    let not_initialised = || EmbeddedError::NotInitialised(dir.display().to_string());
    let port = stored_port(dir).await.ok().flatten().ok_or_else(not_initialised)?;
    let password = tokio::fs::read_to_string(dir.join("password")).await.map_err(|_| not_initialised())?;
    Ok(format!("postgres://{SUPERUSER}:{}@127.0.0.1:{port}/{database}", password.trim()))
}

/// The port stored in `dir`, if the cluster there was ever started.
pub async fn stored_port(dir: &Path) -> Result<Option<u16>, EmbeddedError> {
    match tokio::fs::read_to_string(dir.join("port")).await {
        Ok(text) => text.trim().parse().map(Some).map_err(|_| EmbeddedError::Command {
            what: format!("reading {}", dir.join("port").display()),
            detail: format!("not a port number: {:?}", text.trim()),
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

async fn store_port(dir: &Path, port: u16) -> std::io::Result<()> {
    tokio::fs::write(dir.join("port"), format!("{port}\n")).await
}

/// `pg_config --bindir`, else the newest of Debian's `/usr/lib/postgresql/<version>/bin`.
pub async fn find_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output().await {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

async fn timescaledb_installed(bindir: &Path) -> bool {
    let Ok(out) = Command::new(bindir.join("pg_config")).arg("--sharedir").output().await else {
        return false;
    };
    let sharedir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success() && sharedir.join("extension/timescaledb.control").exists()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).await
}

fn command_error(what: &str, out: &std::process::Output) -> EmbeddedError {
    let detail =
        format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim());
    EmbeddedError::Command { what: what.into(), detail }
}
