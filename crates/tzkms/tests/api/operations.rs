//! Running the real binary as an operator does: `--version`, `config check` on good and bad files (each
//! error message asserted), environment overrides, the startup summary and the root warning, and a
//! SIGTERM in the middle of a burst that must lose no watermark and drop no accepted request.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tezos::{BlsScheme, Curve, SecretKey, Signature};

use crate::helpers::attestation;
use crate::process::{run, run_with, Server, BIN};

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[tokio::test]
async fn version_names_the_build() {
    let out = tokio::process::Command::new(BIN)
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("tzkms {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("rustc "), "{text}");
    assert!(text.contains(" profile, "), "{text}");
}

/// Writes `text` as `<dir>/tzkms.toml` and runs `config check` on it.
async fn check(dir: &Path, text: &str) -> (bool, String, String) {
    let path = dir.join("tzkms.toml");
    std::fs::write(&path, text).unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    run(
        &["config", "check", "--config", path.to_str().unwrap()],
        &dir.join("data"),
    )
    .await
}

fn private(dir: &Path, name: &str, content: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn config_check_reports_what_it_would_serve_and_names_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    std::fs::create_dir_all(&data).unwrap();
    tzkms::startup::write_new_key(&data, &pkh.to_string(), &sk).unwrap();

    // A good file: backends, the store, the listeners and each key's effective policy.
    let (ok, out, err) = check(
        dir.path(),
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:9732\"\n[policy.keys.{pkh}]\nallow = [\"attestation\", \"transaction\"]\n"
        ),
    )
    .await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("backend: file"), "{out}");
    assert!(out.contains("(1 key(s))"), "{out}");
    assert!(out.contains("watermark: file"), "{out}");
    assert!(out.contains("writable"), "{out}");
    assert!(out.contains("operations: http://127.0.0.1:9732/metrics"), "{out}");
    assert!(out.contains(&format!("key {pkh}: ")), "{out}");
    assert!(out.contains("transaction"), "{out}");
    assert!(out.trim_end().ends_with("configuration OK"), "{out}");

    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "misspelt key",
            "[server]\nlisten = [\"127.0.0.1:6732\"]\nmax_body_byte = 10\n".into(),
            vec!["tzkms.toml", "line 3, column 1", "unknown field `max_body_byte`", "did you mean `max_body_bytes`?"],
        ),
        (
            "misspelt section",
            "[metric]\nlisten = \"127.0.0.1:1\"\n".into(),
            vec!["line 1", "unknown field `metric`", "did you mean `metrics`?"],
        ),
        (
            "wrong type",
            "[server]\nmax_body_bytes = \"big\"\n".into(),
            vec!["line 2, column 18", "invalid type: string \"big\""],
        ),
        (
            "bad magic byte",
            "[policy]\nallowed_magic_bytes = [\"0xzz\"]\n".into(),
            vec!["line 2", "\"0xzz\" is not a magic byte"],
        ),
        (
            "unknown request kind",
            "[policy.default]\nallow = [\"transfer\"]\n".into(),
            vec!["unknown request kind"],
        ),
        (
            "unreachable vault",
            "[azure]\nvault_url = \"https://127.0.0.1:1\"\n".into(),
            vec![
                "azure: https://127.0.0.1:1",
                "connection to 127.0.0.1:1 refused: nothing listens there",
            ],
        ),
        (
            "unreachable shared table",
            format!(
                "[watermark.table]\nendpoint = \"http://127.0.0.1:1/devstoreaccount1\"\ntable = \"marks\"\naccount_key_file = \"{}\"\nbudget_ms = 300\n",
                private(dir.path(), "storage-key", "Zm9v")
            ),
            vec![
                "table storage: marks at http://127.0.0.1:1/devstoreaccount1",
                "connection to 127.0.0.1:1 refused: nothing listens there",
            ],
        ),
        (
            "missing TLS certificate",
            "[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncertificate = \"/nonexistent/cert.pem\"\nprivate_key = \"/nonexistent/key.pem\"\n".into(),
            vec!["/nonexistent/cert.pem"],
        ),
    ];
    for (name, text, needles) in cases {
        let (ok, out, err) = check(dir.path(), &text).await;
        assert!(!ok, "{name}: accepted\n{out}");
        assert!(!out.contains("configuration OK"), "{name}: {out}");
        for needle in needles {
            assert!(err.contains(needle), "{name}: {err:?} lacks {needle:?}");
        }
    }

    // A lost watermark store is an error too (the marker says there was one).
    std::fs::remove_file(data.join(tzkms::watermark::file::STORE_FILE)).ok();
    std::fs::write(data.join(tzkms::watermark::file::MARKER_FILE), "x").unwrap();
    let (ok, _, err) = check(dir.path(), "").await;
    assert!(!ok);
    assert!(err.contains("watermarks.json"), "{err}");
    assert!(err.contains("lost") || err.contains("missing"), "{err}");
}

#[tokio::test]
async fn environment_overrides_the_listeners_and_the_log_shows_a_startup_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = Server::start_env(
        &data,
        &[],
        &[("TZKMS_METRICS_LISTEN", "127.0.0.1:0"), ("TZKMS_LOG", "info")],
    )
    .await
    .unwrap();
    let ops = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("metrics on http://"))
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no operations listener in {:?}", server.banner))
        .to_owned();
    let ready = reqwest::get(format!("http://{ops}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    let log = std::fs::read_to_string(log_path).unwrap();
    for needle in [
        "tzkms starting",
        concat!("version=\"", env!("CARGO_PKG_VERSION"), " (commit "),
        "key backend",
        "watermark store",
        "serving key",
        "policy.allowed_magic_bytes",
        "operations listener",
        "listening",
        "SIGTERM: finishing in-flight requests",
        "stopped",
    ] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
    assert_eq!(log.contains("running as root"), running_as_root(), "{log}");
    // TZKMS_LISTEN overrides the signing address (a fixed port is not needed: port 0 is).
    let dir2 = tempfile::tempdir().unwrap();
    let (ok, _, err) = run_with(
        &["serve"],
        dir2.path(),
        &[("TZKMS_LISTEN", "not-an-address")],
        None,
    )
    .await;
    assert!(!ok);
    assert!(err.contains("TZKMS_LISTEN") || err.contains("--listen"), "{err}");
}

/// SIGTERM while every client has a signature in flight at a slow vault (the Key Vault emulator answers
/// sign after 150 ms). Graceful shutdown must finish them: every sign call the vault received is answered
/// to its client, every answer has its audit line and vice versa, the exit status is 0, and after a
/// restart each answered level is under the mark (a different payload there is refused, the same one gets
/// the same signature back).
#[tokio::test]
async fn sigterm_during_a_burst_loses_no_watermark_and_drops_no_accepted_request() {
    const KEYS: usize = 8;
    const TERM_AFTER: usize = 2 * KEYS;
    let emu = crate::azure::emulator().await;
    let mut keys = Vec::new();
    for i in 0..KEYS {
        let info = emu
            .create_key(&format!("baker-{i}"), kv_emulator::Curve::P256)
            .unwrap();
        keys.push(crate::azure::pkh_of(&info));
    }
    emu.faults().set_latency(
        kv_emulator::Operation::Sign,
        std::time::Duration::from_millis(150),
        std::time::Duration::ZERO,
    );
    let dir = tempfile::tempdir().unwrap();
    let config = crate::azure_cli::write_config(&emu, dir.path(), crate::azure_cli::CLIENT_SECRET);
    let config = config.to_str().unwrap().to_owned();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The vault keys were created for this test: vouched for, as `azure keys create` does.
    for (pkh, _) in &keys {
        tzkms::watermark::floor::raise(&data, pkh, None, "created for the test").unwrap();
    }
    let args = [
        "--config",
        config.as_str(),
        "--log-format",
        "json",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    let server = Server::start_env(&data, &args, &[("TZKMS_LOG", "info")])
        .await
        .unwrap();
    let addr = server.addr;
    let log_path = server.log_path.clone();
    let ops = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("metrics on http://")?.strip_suffix("/metrics"))
        .unwrap()
        .to_owned();

    // One client per key, each signing attestations at rising levels as fast as it is answered, until
    // the server stops answering.
    let answered = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut clients = Vec::new();
    for (pkh, _) in &keys {
        let pkh = *pkh;
        let (answered, enough) = (answered.clone(), enough.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ok: BTreeMap<u32, Signature> = BTreeMap::new();
            let mut failures = 0;
            for level in 1..100_000u32 {
                let body = format!("\"{}\"", hex::encode(attestation(level, 1)));
                let sent = http
                    .post(format!("http://{addr}/keys/{pkh}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) => {
                        assert_eq!(r.status(), 200, "level {level}");
                        let v: Value = r.json().await.unwrap();
                        ok.insert(level, v["signature"].as_str().unwrap().parse().unwrap());
                        if answered.fetch_add(1, Ordering::SeqCst) + 1 == TERM_AFTER {
                            enough.notify_one();
                        }
                    }
                    Err(_) => {
                        // Refused or closed: the server is going away. A second failure in a row ends
                        // this client (the first may be a keep-alive connection closed under it).
                        failures += 1;
                        if failures >= 2 {
                            break;
                        }
                    }
                }
            }
            (pkh, ok)
        }));
    }
    enough.notified().await;
    // Wait (a condition, not a delay) until several signatures are in flight at the vault.
    let in_flight = || {
        let s = emu.counters().stats(kv_emulator::Operation::Sign);
        s.received - s.succeeded - s.failed
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while in_flight() < KEYS as u64 / 2 {
        assert!(std::time::Instant::now() < deadline, "signatures never in flight");
        tokio::task::yield_now().await;
    }
    server.send_sigterm().await;
    // While it drains, readiness is red so a load balancer stops sending (the calls in flight at the vault
    // take 150 ms, so the drain lasts that long).
    // (The signal is handled asynchronously: poll until it is, within the drain.)
    let mut last = Value::Null;
    for _ in 0..200 {
        let r = reqwest::get(format!("http://{ops}/readyz"))
            .await
            .expect("ops listener up during drain");
        last = r.json().await.unwrap();
        if last["failed"] == serde_json::json!(["shutdown"]) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(last["failed"], serde_json::json!(["shutdown"]), "{last}");
    let status = server.wait().await;
    assert!(status.success(), "exit status {status:?}");
    let mut answers: BTreeMap<String, BTreeMap<u32, Signature>> = BTreeMap::new();
    for c in clients {
        let (pkh, ok) = c.await.unwrap();
        answers.insert(pkh.to_string(), ok);
    }
    let total: u64 = answers.values().map(|a| a.len() as u64).sum();
    let vault = emu.counters().stats(kv_emulator::Operation::Sign);
    assert_eq!(vault.received, vault.succeeded, "{vault:?}");
    assert_eq!(
        vault.succeeded, total,
        "the vault signed {} times, clients got {total} signatures",
        vault.succeeded
    );
    assert!(total >= TERM_AFTER as u64 + KEYS as u64 / 2);

    // Every request the server signed (its audit line) was answered to its client, and vice versa.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let mut signed: BTreeSet<(String, u32)> = BTreeSet::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["target"] == "tzkms::audit" && v["fields"]["decision"] == "signed" {
            signed.insert((
                v["fields"]["pkh"].as_str().unwrap().to_owned(),
                v["fields"]["level"].as_u64().unwrap() as u32,
            ));
        }
    }
    let received: BTreeSet<(String, u32)> = answers
        .iter()
        .flat_map(|(pkh, ok)| ok.keys().map(move |l| (pkh.clone(), *l)))
        .collect();
    assert_eq!(
        signed, received,
        "signed but not answered, or answered but not audited"
    );
    assert!(log.contains("\"stopped\""), "{log}");

    // After a restart, every answered level is under the mark.
    emu.faults().clear_latency();
    let server = Server::start(&data, &["--config", config.as_str()])
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for (pkh, pk) in &keys {
        let Some((&top, sig)) = answers[&pkh.to_string()].iter().next_back() else {
            continue;
        };
        assert!(pk.verify(&attestation(top, 1), sig, BlsScheme::default()));
        let post = |payload: Vec<u8>| {
            http.post(format!("http://{}/keys/{pkh}", server.addr))
                .header("content-type", "application/json")
                .body(format!("\"{}\"", hex::encode(payload)))
                .send()
        };
        let r = post(attestation(top, 2)).await.unwrap();
        assert_eq!(r.status(), 409, "{pkh} level {top}");
        let r = post(attestation(top, 1)).await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["signature"].as_str().unwrap(), sig.to_string());
    }
    assert!(server.terminate().await.success());
}

fn unit_file() -> (std::path::PathBuf, String) {
    let path = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../deploy/tzkms.service");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

#[tokio::test]
async fn the_systemd_unit_is_hardened_and_verifies() {
    let (_, text) = unit_file();
    let directives: BTreeSet<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "User=tzkms",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "StateDirectory=tzkms",
        "StateDirectoryMode=0700",
        "CapabilityBoundingSet=",
        "UMask=0077",
        "KillSignal=SIGTERM",
    ] {
        assert!(directives.contains(wanted), "deploy/tzkms.service lacks {wanted}");
    }
    // The data directory comes from the config file the unit passes, so that an operator's command with
    // the same --config reads the same store; an Environment= line only the unit sees would not.
    assert!(
        !directives.iter().any(|d| d.contains("TZKMS_DATA_DIR")),
        "deploy/tzkms.service sets the data directory where operators' commands do not see it"
    );
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tzkms.toml"))
            .unwrap();
    assert!(
        example
            .lines()
            .any(|l| l.starts_with("data_dir = \"/var/lib/tzkms\"")),
        "examples/tzkms.toml (installed as /etc/tzkms/tzkms.toml) must name the unit's state directory"
    );
    assert!(
        directives
            .iter()
            .any(|d| d.starts_with("ExecStart=/usr/local/bin/tzkms ") && d.ends_with(" serve")),
        "no ExecStart running serve"
    );
    // systemd's own checks, with the binary this test built in place of /usr/local/bin/tzkms. CI installs
    // systemd-analyze; elsewhere the directive checks above stand alone.
    let Ok(analyze) = which("systemd-analyze") else {
        assert!(std::env::var_os("CI").is_none(), "CI must have systemd-analyze");
        eprintln!("systemd-analyze not installed: unit checked by its directives only");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tzkms.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/tzkms", BIN)).unwrap();
    let out = tokio::process::Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::process::Command::new(&analyze)
        .args(["security", "--offline=yes"])
        .arg(&copy)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for tzkms.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    // systemd rates 0-10; below 2 is its "OK" band.
    assert!(exposure < 2.0, "exposure {exposure}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// The unit's way, without systemd: an unprivileged user, a 0700 state directory it owns. The server
/// starts, signs, and does not warn about root.
#[tokio::test]
async fn it_runs_as_an_unprivileged_user_without_the_root_warning() {
    if !running_as_root() {
        // Already unprivileged: the ordinary process tests cover this, and the warning must be absent.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let server = Server::start(&dir.path().join("data"), &[]).await.unwrap();
        let log_path = server.log_path.clone();
        assert!(server.terminate().await.success());
        assert!(!std::fs::read_to_string(log_path)
            .unwrap()
            .contains("running as root"));
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let Ok(setpriv) = which("setpriv") else {
        panic!("setpriv (util-linux) is needed to drop privileges in this test");
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("state");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let log = dir.path().join("log");
    let mut child = tokio::process::Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
            BIN,
        ])
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("TZKMS_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = line.strip_prefix("listening on http://") {
                return a.to_owned();
            }
        }
        panic!("no listening line: {}", std::fs::read_to_string(&log).unwrap());
    })
    .await
    .unwrap();
    let keys: Value = reqwest::get(format!("http://{addr}/authorized_keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(keys.is_object());
    child.kill().await.unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("tzkms starting"), "{text}");
    assert!(!text.contains("running as root"), "{text}");
    // What it created is its own and private.
    use std::os::unix::fs::MetadataExt;
    let store = std::fs::metadata(data.join(tzkms::watermark::file::STORE_FILE)).unwrap();
    assert_eq!(store.uid(), 65534);
    assert_eq!(store.mode() & 0o077, 0, "store mode {:o}", store.mode());
}

/// A signer with nothing to sign with says so everywhere an operator looks: `config check` fails naming the
/// fix, `serve` logs a warning at startup, and readiness is red on the `keys` check with the same fix.
#[tokio::test]
async fn a_signer_without_keys_says_so_at_startup_in_readiness_and_in_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = dir.path().join("tzkms.toml");
    std::fs::write(&config, "[keys]\ngenerate_if_empty = false\n").unwrap();
    let config = config.to_str().unwrap();
    for backtrace in [None, Some("1")] {
        let env: Vec<(&str, &str)> = backtrace.map(|b| ("RUST_BACKTRACE", b)).into_iter().collect();
        let (ok, out, err) = run_with(&["config", "check", "--config", config], &data, &env, None).await;
        assert!(!ok, "config check passed without a key:\n{out}");
        assert!(!out.contains("configuration OK"), "{out}");
        assert!(
            err.contains(&format!("no key is served from {}", data.display())),
            "{err}"
        );
        assert!(err.contains("tzkms keys generate --curve p256"), "{err}");
        assert!(err.contains("tzkms keys import"), "{err}");
        assert!(err.contains("[azure] keys"), "{err}");
    }
    // Without a config file the first `serve` would generate a key: config check says so, and still fails.
    let (ok, _, err) = run(&["config", "check"], &data).await;
    assert!(!ok);
    assert!(err.contains("keys.generate_if_empty"), "{err}");

    let server = Server::start(&data, &["--config", config, "--metrics-listen", "127.0.0.1:0"])
        .await
        .unwrap();
    let ops = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("metrics on http://")?.strip_suffix("/metrics"))
        .unwrap()
        .to_owned();
    let ready = reqwest::get(format!("http://{ops}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["failed"], serde_json::json!(["keys"]), "{body}");
    let keys = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "keys")
        .unwrap();
    let detail = keys["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("no key is served, so every signing request gets 404: "),
        "{detail}"
    );
    assert!(detail.contains("tzkms keys generate --curve p256"), "{detail}");
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    let log = std::fs::read_to_string(log_path).unwrap();
    let warning = log
        .lines()
        .find(|l| l.contains("no key is served"))
        .unwrap_or_else(|| panic!("no startup warning:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("tzkms keys generate --curve p256"), "{warning}");
}
