//! Azurite, Microsoft's Azure Storage emulator (npm `azurite`), for the shared watermark tests. Installed
//! on first use into `target/azurite` (pinned: 3.35.0 is the last release that runs on Node 20), started on
//! a free loopback port, stopped on drop.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
pub(crate) const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const VERSION: &str = "3.35.0";

fn install_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("../../target/azurite")
}

/// Installs Azurite once (a lock file keeps parallel tests from installing twice).
fn ensure_installed() -> PathBuf {
    let dir = install_dir();
    let bin = dir.join("node_modules/.bin/azurite-table");
    std::fs::create_dir_all(&dir).expect("target/azurite");
    let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
    lock.lock().expect("lock");
    let stamp = dir.join(".installed");
    if !bin.exists() || std::fs::read_to_string(&stamp).unwrap_or_default() != VERSION {
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&dir)
            .arg(format!("azurite@{VERSION}"))
            .status()
            .expect("npm is needed to install Azurite");
        assert!(status.success(), "npm install azurite@{VERSION} failed");
        std::fs::write(&stamp, VERSION).expect("stamp");
    }
    bin
}

pub(crate) struct Azurite {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Azurite {
    pub(crate) async fn start() -> Self {
        let bin = tokio::task::spawn_blocking(ensure_installed)
            .await
            .expect("install");
        let dir = tempfile::tempdir().expect("dir");
        // Azurite cannot report a port it picked, so take a free one and hand it over.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(bin)
            .args([
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                &port.to_string(),
                "--location",
            ])
            .arg(dir.path())
            .args(["--disableTelemetry", "--skipApiVersionCheck"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start azurite-table");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let started = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("successfully started") {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(started, "azurite-table did not start");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
            _dir: dir,
        }
    }

    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
