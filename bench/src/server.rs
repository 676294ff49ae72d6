//! Starting an `assent` server for a run, and reading what its development SMS provider logs.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::Notify;

/// The shared secret the started server's Okta hook expects.
pub const OKTA_SECRET: &str = "Basic YXNzZW50LWJlbmNoOm9rdGE=";

/// A server this tool started, stopped when dropped.
#[derive(Debug)]
pub struct Started {
    child: Child,
    dir: PathBuf,
    /// Its base URL.
    pub url: String,
    /// The bootstrap API key it wrote.
    pub api_key: String,
    /// Codes its `log` SMS provider printed, by number.
    pub codes: Arc<Codes>,
}

impl Started {
    /// Peak resident memory (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where a started server keeps its data: a fresh directory, and the database URL it uses.
#[derive(Debug)]
pub struct Target {
    dir: PathBuf,
    /// `sqlite` or a `postgres://` URL.
    database: String,
}

impl Target {
    /// A fresh data directory for `database` (`sqlite` or a `postgres://` URL).
    pub fn new(database: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("assent-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Target { dir, database: database.to_owned() })
    }

    /// The URL the server's database is at.
    pub fn database_url(&self) -> String {
        if self.database == "sqlite" {
            format!("sqlite://{}", self.dir.join("assent.db").display())
        } else {
            self.database.clone()
        }
    }

    fn command(&self, bin: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir").arg(&self.dir);
        if self.database != "sqlite" {
            cmd.args(["--database-url", &self.database]);
        }
        cmd.env_remove("ASSENT_CONFIG")
            .env("NO_COLOR", "1")
            // The development SMS provider logs each message at info; nothing else is wanted.
            .env("ASSENT_LOG", "warn,assent_server::sms=info")
            // Anti-fatigue and toll-fraud limits exist to stop exactly what a load test does. The
            // push limit is raised to a level a person could still reach (one a second), not
            // removed: it bounds how many recent challenges a creation reads.
            .env("ASSENT_CHALLENGES__PUSH_PER_USER_PER_10_MINUTES", "600")
            .env("ASSENT_SMS__LIMITS__PER_NUMBER_10MIN", "0")
            .env("ASSENT_SMS__LIMITS__PER_NUMBER_DAY", "0")
            .env("ASSENT_SMS__LIMITS__PER_COUNTRY_10MIN", "0")
            .env("ASSENT_SMS__LIMITS__PER_COUNTRY_DAY", "0")
            .env("ASSENT_OKTA__AUTH_SECRET", OKTA_SECRET);
        cmd
    }

    /// Applies the migrations (`assent migrate`), so rows can be written before the server starts.
    pub fn migrate(&self) -> anyhow::Result<()> {
        let status = self.command(&assent_bin()?).arg("migrate").stdout(Stdio::null()).status()?;
        if !status.success() {
            bail!("assent migrate failed: {status}");
        }
        Ok(())
    }

    /// Starts `assent serve` on a free loopback port and waits until it listens.
    pub fn start(self) -> anyhow::Result<Started> {
        let bin = assent_bin()?;
        let mut child = self
            .command(&bin)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let codes = Arc::new(Codes::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = codes.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("assent: listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                } else if let Some((to, code)) = logged_code(&line) {
                    sink.put(to, code);
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("server: {line}");
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(60)).context("the server did not start")?;
        let api_key = std::fs::read_to_string(self.dir.join("admin-api-key"))?.trim().to_owned();
        Ok(Started { child, dir: self.dir, url, api_key, codes })
    }
}

fn assent_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("no parent dir")?.join("assent"))
}

/// The latest code per phone number, as the server's development SMS provider logged them.
#[derive(Debug, Default)]
pub struct Codes {
    latest: Mutex<HashMap<String, String>>,
    arrived: Notify,
}

impl Codes {
    fn put(&self, to: String, code: String) {
        if let Ok(mut latest) = self.latest.lock() {
            latest.insert(to, code);
        }
        self.arrived.notify_waiters();
    }

    /// Waits for a code sent to `to` and takes it.
    pub async fn take(&self, to: &str) -> anyhow::Result<String> {
        let wait = async {
            loop {
                let arrived = self.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                if let Some(code) = self.latest.lock().ok().and_then(|mut m| m.remove(to)) {
                    return code;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.with_context(|| format!("no code for {to}"))
    }
}

/// `(to, code)` from a line of the `log` SMS provider, e.g.
/// `... SMS (log provider, development only: not sent) provider=log to=+16502530001 message_id=log-... text=Your Assent code is 123456. ...`
fn logged_code(line: &str) -> Option<(String, String)> {
    if !line.contains("SMS (log provider") {
        return None;
    }
    let to = line.split_whitespace().find_map(|w| w.strip_prefix("to="))?.trim_matches('"').to_owned();
    let text = &line[line.find("text=")? + 5..];
    let code = text.split(|c: char| !c.is_ascii_digit()).find(|run| run.len() == 6)?.to_owned();
    Some((to, code))
}

#[cfg(test)]
mod tests {
    use super::logged_code;

    #[test]
    fn reads_codes_from_the_development_provider_log() {
        let line = "2026-11-22T05:00:00.000000Z  INFO assent_server::sms: SMS (log provider, development only: not sent) \
                    provider=log to=+16502530001 message_id=log-00ff text=\"Your Assent code is 042917. Don't share it.\"";
        assert_eq!(logged_code(line), Some(("+16502530001".to_owned(), "042917".to_owned())));
        assert_eq!(logged_code("INFO something else to=+1 text=123456"), None);
    }
}
