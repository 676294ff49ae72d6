//! Test kit shared by every test binary: throwaway PostgreSQL databases, the real `assent`
//! binary started as a process on port 0, and local fakes of SMS and email services.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod fakes;
pub mod phone;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The PostgreSQL server tests create their databases on (`ASSENT_TEST_POSTGRES_URL`,
/// default the local cluster's `test` database).
pub fn postgres_admin_url() -> String {
    std::env::var("ASSENT_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A throwaway PostgreSQL database, dropped (with its connections) when this guard goes.
#[derive(Debug)]
pub struct PgDatabase {
    name: String,
    /// URL of the new database.
    pub url: String,
}

impl PgDatabase {
    /// Creates a database with a random name.
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL tests need a server at {admin} ({e}); start one or set ASSENT_TEST_POSTGRES_URL \
                 (`.ci/run` starts the local cluster)"
            )
        });
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).unwrap();
        let name = format!("assent_test_{}", hex::encode(bytes));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
        PgDatabase { url: format!("{base}/{name}"), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside a test's runtime; do the async clean-up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// The `assent` binary built alongside this test (`target/<profile>/assent`).
pub fn assent_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/assent
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("assent");
    assert!(bin.exists(), "{} is missing: run the tests with `cargo test --workspace`", bin.display());
    bin
}

/// A running `assent serve` process.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    /// The data directory it was started with.
    pub data_dir: PathBuf,
    /// Everything the process wrote to stderr so far is also kept here.
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `assent serve --listen 127.0.0.1:0` with `data_dir`, extra environment and
    /// arguments, and waits until it announces its address.
    pub fn start(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut cmd = Command::new(assent_bin());
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").arg("--data-dir").arg(data_dir).args(args);
        cmd.env("ASSENT_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("assent: listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("assent did not start; stderr:\n{}", lines.lock().unwrap().join("\n"));
            }
        };
        Server { child, url, data_dir: data_dir.to_owned(), stderr: lines }
    }

    /// The bootstrap API key the server wrote on first start.
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-api-key")).unwrap().trim().to_owned()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.wait(Duration::from_secs(30))
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "assent did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process's stderr so far, one string.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
