//! The demo page in a real browser: headless Chromium, driven by playwright-core with a CDP
//! virtual authenticator, against the real `assent` binary (tests/browser/demo.test.mjs).
//! Needs Debian's `chromium`, Node.js and `npm ci` in tests/browser; `.ci/run` installs them.
//! Without them this test fails with what to install: it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use assent_tests::{Server, assent_bin};

fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    assert!(path.exists(), "{} is missing: `apt-get install chromium` (or set CHROMIUM)", path.display());
    path
}

fn browser_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is missing: install Node.js 20 or newer");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in {}",
        dir.display()
    );
    dir
}

#[test]
fn demo_page_in_headless_chromium() {
    let chromium = chromium();
    let dir = browser_dir();
    let data = tempfile::tempdir().unwrap();
    let phone = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[], &[]);
    // Development passkeys live on localhost, a secure context for WebAuthn.
    let url = server.url.replace("127.0.0.1", "localhost");
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-artifacts");
    let device = assent_bin().with_file_name(format!("assent-device{}", std::env::consts::EXE_SUFFIX));
    assert!(device.exists(), "{} is missing: run the tests with `cargo test --workspace`", device.display());

    let out = Command::new("node")
        .arg(dir.join("demo.test.mjs"))
        .current_dir(&dir)
        .env("ASSENT_URL", &url)
        .env("ASSENT_DEVICE", &device)
        .env("ASSENT_DEVICE_STATE", phone.path().join("assent-device.json"))
        .env("ASSENT_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser test failed (screenshots in {}):\n{stdout}\n{}\nserver log:\n{}",
        artifacts.display(),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    println!("{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
