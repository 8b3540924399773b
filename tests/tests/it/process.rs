//! The `flowtrace` program run as real processes, with a data folder of its own, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `flowtrace` program (see tests/src/flowtrace_it.rs), built by `cargo test` from the current sources.
pub fn flowtrace_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_flowtrace-it"))
}

/// A `flowtrace` command in `cwd` with no database settings inherited from the test's environment.
pub fn flowtrace(cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(flowtrace_bin());
    cmd.current_dir(cwd).args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name == "DATABASE_URL" || name.starts_with("FLOWTRACE_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// Runs a command to its end (at most `limit`, a guard against hangs), returning its output.
pub async fn run(mut cmd: Command, limit: Duration) -> Output {
    let task = tokio::task::spawn_blocking(move || cmd.output().expect("running flowtrace"));
    tokio::time::timeout(limit, task).await.expect("flowtrace ends").expect("join")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A folder under the temp folder, empty, removed when dropped.
pub struct TempFolder(pub PathBuf);

impl TempFolder {
    pub fn new(name: &str) -> TempFolder {
        let dir = std::env::temp_dir().join(format!("flowtrace-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp folder");
        TempFolder(dir)
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `flowtrace serve` as a child process; stopped with SIGTERM when dropped.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    log: PathBuf,
}

impl Server {
    /// Starts `flowtrace serve` on the data folder `data` and a free port, and waits until `/readyz` answers 200.
    pub async fn start(cwd: &Path, data: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let log = cwd.join(format!("serve-{port}.log"));
        let mut cmd = flowtrace(cwd, &["serve", "--bind", &format!("127.0.0.1:{port}")]);
        cmd.arg("--data-dir").arg(data);
        cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).expect("log file"));
        let child = cmd.spawn().expect("flowtrace serve starts");
        let server = Server { child: Some(child), base: format!("http://127.0.0.1:{port}"), log };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if let Ok(res) = http.get(format!("{}/readyz", self.base)).send().await
                && res.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("flowtrace serve did not become ready; its log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits for the process to end; returns its log.
    pub async fn stop(mut self) -> String {
        self.terminate().await;
        self.log()
    }

    async fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let waited = tokio::task::spawn_blocking(move || {
            for _ in 0..300 {
                if let Ok(Some(_)) = child.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            false
        })
        .await
        .unwrap_or(false);
        assert!(waited, "flowtrace serve did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            for _ in 0..300 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
        }
    }
}
