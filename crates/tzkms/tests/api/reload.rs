//! SIGHUP on the real binary: the configuration file, key files, policy and authorized keys are re-read and
//! applied at once; a reload that fails changes nothing, is counted and says why. Every wait is on the
//! `tzkms_reloads_total` counter of the operations listener, never a sleep.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tezos::{Curve, PublicKeyHash, SecretKey};

use crate::helpers::attestation;
use crate::process::{run, Server};

/// Upper bound for a reload to be applied; a failure bound, not a synchronisation delay.
const BOUND: Duration = Duration::from_secs(20);

pub(crate) struct Running {
    pub server: Server,
    pub ops: String,
    pub http: reqwest::Client,
}

impl Running {
    /// `tzkms serve --config <config>` with an operations listener and an `info` log.
    pub(crate) async fn start(data: &Path, config: &Path, env: &[(&str, &str)]) -> Self {
        let mut env = env.to_vec();
        env.push(("TZKMS_LOG", "info"));
        std::fs::create_dir_all(data).unwrap();
        let server = Server::start_env(
            data,
            &[
                "--config",
                config.to_str().unwrap(),
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            &env,
        )
        .await
        .unwrap();
        let ops = server
            .banner
            .iter()
            .find_map(|l| l.strip_prefix("metrics on http://")?.strip_suffix("/metrics"))
            .unwrap()
            .to_owned();
        Self {
            server,
            ops,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.server.log_path).unwrap()
    }

    pub(crate) async fn sighup(&self) {
        let pid = self.server.child.id().expect("running");
        let status = tokio::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }

    /// The value of `tzkms_reloads_total{result=…}`, or None when the operations listener is gone.
    pub(crate) async fn reloads(&self, result: &str) -> Option<u64> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.ops))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("tzkms_reloads_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map(|v| v.trim().parse().unwrap())
    }

    /// Sends SIGHUP and waits until `tzkms_reloads_total{result}` reaches `count`.
    pub(crate) async fn reload_and_wait(&mut self, result: &str, count: u64) {
        self.sighup().await;
        let deadline = Instant::now() + BOUND;
        loop {
            if let Ok(Some(status)) = self.server.child.try_wait() {
                panic!("tzkms died on SIGHUP ({status}):\n{}", self.log());
            }
            match self.reloads(result).await {
                Some(n) if n >= count => {
                    assert_eq!(n, count, "more reloads than signals");
                    return;
                }
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "no {result} reload #{count} within {BOUND:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn sign(&self, pkh: &PublicKeyHash, payload: &[u8]) -> u16 {
        self.http
            .post(format!("http://{}/keys/{pkh}", self.addr()))
            .header("content-type", "application/json")
            .body(format!("\"{}\"", hex::encode(payload)))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub(crate) async fn get(&self, path: &str) -> u16 {
        self.http
            .get(format!("http://{}{path}", self.addr()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

const NO_GENERATION: &str = "[keys]\ngenerate_if_empty = false\n";

fn allow_generic(pkh: &PublicKeyHash) -> String {
    format!(
        "{NO_GENERATION}[policy.keys.{pkh}]\nallow = [\"block\", \"preattestation\", \"attestation\", \"generic_unchecked\"]\n"
    )
}

/// `tzkms keys generate` into `data`: the new key's address.
async fn generate_key(data: &Path) -> PublicKeyHash {
    let (ok, out, err) = run(&["keys", "generate", "--curve", "p256"], data).await;
    assert!(ok, "{err}");
    out.lines().next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn sighup_on_a_plain_http_server_applies_new_keys_and_policy_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    tzkms::startup::write_new_key(&data, "baker", &sk).unwrap();
    let config = dir.path().join("tzkms.toml");
    std::fs::write(&config, NO_GENERATION).unwrap();
    let mut signer = Running::start(&data, &config, &[]).await;
    assert_eq!(
        signer.reloads("ok").await,
        Some(0),
        "the series exist from startup"
    );
    assert_eq!(signer.reloads("failed").await, Some(0));

    // No TLS section: SIGHUP used to kill the process (its default action).
    signer.reload_and_wait("ok", 1).await;
    assert_eq!(signer.get("/authorized_keys").await, 200);
    assert_eq!(signer.sign(&pkh, &attestation(1, 1)).await, 200);

    // A key generated while serving is served after a reload, not before.
    let new = generate_key(&data).await;
    assert_eq!(signer.get(&format!("/keys/{new}")).await, 404);
    signer.reload_and_wait("ok", 2).await;
    assert_eq!(signer.get(&format!("/keys/{new}")).await, 200);
    assert_eq!(signer.sign(&new, &attestation(1, 1)).await, 200);

    // A policy change in the file is applied by the reload.
    let generic = [0x03, 0x11, 0x22, 0x33];
    assert_eq!(signer.sign(&pkh, &generic).await, 403);
    std::fs::write(&config, allow_generic(&pkh)).unwrap();
    signer.reload_and_wait("ok", 3).await;
    assert_eq!(signer.sign(&pkh, &generic).await, 200);
    assert_eq!(signer.sign(&new, &generic).await, 403, "only the named key");

    // The watermark store was not swapped: the mark of level 1 still holds.
    assert_eq!(signer.sign(&pkh, &attestation(1, 2)).await, 409);

    // Removing a key file removes the key.
    std::fs::remove_file(data.join("keys").join(format!("{new}.key"))).unwrap();
    signer.reload_and_wait("ok", 4).await;
    assert_eq!(signer.get(&format!("/keys/{new}")).await, 404);

    // A new entry in the octez-client wallet named by the file is served after a reload.
    let wallet_key = SecretKey::generate(Curve::Ed25519);
    let wallet = dir.path().join("octez");
    std::fs::create_dir_all(&wallet).unwrap();
    let secret_keys = wallet.join("secret_keys");
    let entry = format!("unencrypted:{}", wallet_key.to_b58().as_str());
    std::fs::write(
        &secret_keys,
        serde_json::json!([{"name": "baker2", "value": entry}]).to_string(),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_wallet = allow_generic(&pkh).replace(
        "generate_if_empty = false\n",
        &format!(
            "generate_if_empty = false\noctez_base_dir = \"{}\"\n",
            wallet.display()
        ),
    );
    std::fs::write(&config, with_wallet).unwrap();
    let wallet_pkh = wallet_key.public_key().hash();
    assert_eq!(signer.get(&format!("/keys/{wallet_pkh}")).await, 404);
    signer.reload_and_wait("ok", 5).await;
    assert_eq!(signer.get(&format!("/keys/{wallet_pkh}")).await, 200);

    let log = signer.log();
    assert!(
        log.lines()
            .any(|l| l.contains("SIGHUP: key added") && l.contains(&new.to_string())),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("SIGHUP: key removed") && l.contains(&new.to_string())),
        "{log}"
    );
    assert!(log.contains("SIGHUP: configuration reloaded"), "{log}");
    assert!(log.contains(&format!("key {pkh}: policy.keys.{pkh}")), "{log}");
    assert!(signer.server.terminate().await.success());
}

#[tokio::test]
async fn a_reload_that_fails_keeps_the_running_configuration_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    tzkms::startup::write_new_key(&data, "baker", &sk).unwrap();
    let config = dir.path().join("tzkms.toml");
    std::fs::write(&config, NO_GENERATION).unwrap();
    // Backtraces on: error lines stay one line naming the cause.
    let mut signer = Running::start(&data, &config, &[("RUST_BACKTRACE", "1")]).await;
    let generic = [0x03, 0x44, 0x55];
    let failures = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("SIGHUP: reload failed, still serving the previous configuration"))
            .map(str::to_owned)
            .collect()
    };

    // A configuration file that does not parse.
    std::fs::write(
        &config,
        format!("{}[server]\nmax_body_byte = 10\n", allow_generic(&pkh)),
    )
    .unwrap();
    signer.reload_and_wait("failed", 1).await;
    assert_eq!(signer.reloads("ok").await, Some(0));
    let lines = failures(&signer.log());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert!(lines[0].contains("unknown field `max_body_byte`"), "{}", lines[0]);
    assert!(!signer.log().contains("stack backtrace"));
    assert_eq!(signer.sign(&pkh, &attestation(5, 1)).await, 200);
    assert_eq!(signer.sign(&pkh, &generic).await, 403);

    // A valid file, but a new key file others can read: the whole reload is refused, policy included.
    std::fs::write(&config, allow_generic(&pkh)).unwrap();
    let new = generate_key(&data).await;
    let key_file = data.join("keys").join(format!("{new}.key"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    signer.reload_and_wait("failed", 2).await;
    let lines = failures(&signer.log());
    assert!(
        lines[1].contains(&format!("chmod 600 {}", key_file.display())),
        "{}",
        lines[1]
    );
    assert_eq!(
        signer.sign(&pkh, &generic).await,
        403,
        "a failed reload changed the policy"
    );
    assert_eq!(signer.get(&format!("/keys/{new}")).await, 404);

    // An unreadable authorized_keys file.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        &config,
        format!(
            "{}[auth]\nauthorized_keys_file = \"{}\"\n",
            allow_generic(&pkh),
            dir.path().join("missing-authorized-keys").display()
        ),
    )
    .unwrap();
    signer.reload_and_wait("failed", 3).await;
    let lines = failures(&signer.log());
    assert!(lines[2].contains("missing-authorized-keys"), "{}", lines[2]);
    assert_eq!(signer.get("/authorized_keys").await, 200);

    // Fixed: everything at once.
    std::fs::write(&config, allow_generic(&pkh)).unwrap();
    signer.reload_and_wait("ok", 1).await;
    assert_eq!(signer.reloads("failed").await, Some(3));
    assert_eq!(signer.sign(&pkh, &generic).await, 200);
    assert_eq!(signer.get(&format!("/keys/{new}")).await, 200);

    // A setting that needs a restart is named and otherwise ignored.
    std::fs::write(
        &config,
        format!("{}[limits]\nbackend_concurrency = 3\n", allow_generic(&pkh)),
    )
    .unwrap();
    signer.reload_and_wait("ok", 2).await;
    let log = signer.log();
    assert!(
        log.contains("SIGHUP: limits changed in the configuration file: it needs a restart"),
        "{log}"
    );
    assert!(signer.server.terminate().await.success());
}

/// A key created in the vault while serving: a request for it within the unknown-key refresh interval gets
/// 404, a SIGHUP makes the vault backend re-list its keys, and then it is served.
#[tokio::test]
async fn sighup_serves_a_key_created_in_the_vault_meanwhile() {
    let emu = crate::azure::emulator().await;
    let (first, _) = crate::azure::pkh_of(&emu.create_key("baker-0", kv_emulator::Curve::P256).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = crate::azure_cli::write_config(&emu, dir.path(), crate::azure_cli::CLIENT_SECRET);
    let data = dir.path().join("data");
    let mut signer = Running::start(&data, &config, &[]).await;
    assert_eq!(signer.get(&format!("/keys/{first}")).await, 200);
    // An unknown address makes the backend re-list the vault once; the next re-list for an unknown
    // address is at least 30 s away.
    let unknown = SecretKey::generate(Curve::P256).public_key().hash();
    assert_eq!(signer.get(&format!("/keys/{unknown}")).await, 404);
    let (second, _) = crate::azure::pkh_of(&emu.create_key("baker-1", kv_emulator::Curve::P256).unwrap());
    assert_eq!(signer.get(&format!("/keys/{second}")).await, 404);
    signer.reload_and_wait("ok", 1).await;
    assert_eq!(signer.get(&format!("/keys/{second}")).await, 200);
    // A vault key this data directory did not create has no history here until something vouches for it.
    assert_eq!(signer.sign(&second, &attestation(3, 1)).await, 409);
    let (ok, _, err) = crate::process::run(
        &["watermark", "floor", &second.to_string(), "--level", "0"],
        &data,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(signer.sign(&second, &attestation(3, 1)).await, 200);
    let log = signer.log();
    assert!(
        log.lines()
            .any(|l| l.contains("SIGHUP: key added") && l.contains(&second.to_string())),
        "{log}"
    );
    assert!(signer.server.terminate().await.success());
}
