//! The real `tzkms` binary as a child process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tzkms");

/// Upper bound for the server to print its address; a failure bound, not a synchronisation delay.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// What the server printed on stdout before its first `listening on` line.
    pub banner: Vec<String>,
    /// Where its stderr (the log) goes.
    pub log_path: std::path::PathBuf,
}

impl Server {
    /// Signs `payload` for `pkh` on the plain HTTP listener with `query` (e.g. `version=3`): the status and
    /// the JSON body.
    pub(crate) async fn sign(
        &self,
        pkh: &tezos::PublicKeyHash,
        query: &str,
        payload: &[u8],
    ) -> (u16, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/keys/{pkh}?{query}", self.addr))
            .json(&hex::encode(payload))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Starts `tzkms serve` on a free port and waits for its `listening on` line.
    pub(crate) async fn start(data_dir: &Path, extra: &[&str]) -> Result<Self, String> {
        Self::start_env(data_dir, extra, &[]).await
    }

    /// Like `start`, with extra environment variables.
    pub(crate) async fn start_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        // stderr goes to a file: a pipe nobody reads would fill up and block the server.
        let log_path = data_dir.with_extension("stderr.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("TZKMS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.strip_prefix("listening on http://") {
                    return addr.parse::<SocketAddr>().ok();
                }
                banner.push(line);
            }
            None
        })
        .await
        .ok()
        .flatten();
        match found {
            Some(addr) => {
                // Keep draining stdout so the child never blocks on a full pipe.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Self {
                    child,
                    addr,
                    banner,
                    log_path,
                })
            }
            None => {
                let _ = child.kill().await;
                Err(std::fs::read_to_string(&log_path).unwrap_or_default())
            }
        }
    }

    pub(crate) async fn kill9(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    pub(crate) async fn terminate(mut self) -> std::process::ExitStatus {
        self.send_sigterm().await;
        self.child.wait().await.expect("wait")
    }

    /// Sends SIGTERM and returns at once (the server drains, then exits).
    pub(crate) async fn send_sigterm(&self) {
        let pid = self.child.id().expect("running") as i32;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill");
    }

    pub(crate) async fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().await.expect("wait")
    }
}

/// Runs a `tzkms` command to completion: (success, stdout, stderr).
pub(crate) async fn run(args: &[&str], data_dir: &Path) -> (bool, String, String) {
    run_with(args, data_dir, &[], None).await
}

/// Runs a `tzkms` command with extra environment variables and standard input.
pub(crate) async fn run_with(
    args: &[&str],
    data_dir: &Path,
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("TZKMS_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tzkms");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("wait tzkms");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
