//! Liveness and readiness on the operations listener after real traffic: green when everything works,
//! red (503, with the failing check named and explained) when the Key Vault emulator fails, when a
//! token is about to expire, when the watermark directory or the shared table stops taking writes; green
//! again once they recover. Metrics count what the backend saw meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kv_emulator::{Operation, Target};
use serde_json::Value;
use tezos::{Curve, SecretKey};
use tokio::net::{TcpListener, TcpStream};

use crate::azure::{azure_config, emulator, pkh_of};
use crate::helpers::{attestation, TestSigner};

fn check<'a>(body: &'a Value, name_prefix: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str().unwrap().starts_with(name_prefix))
        .unwrap_or_else(|| panic!("no check {name_prefix} in {body}"))
}

fn detail_of(body: &Value, name_prefix: &str) -> String {
    check(body, name_prefix)["detail"].as_str().unwrap().to_owned()
}

fn series(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn liveness_and_readiness_of_a_file_signer_follow_the_data_directory() {
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let signer = TestSigner::start_with(&[sk], |_| {}).await;
    let (status, body) = signer.ops("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("alive")));

    assert_eq!(signer.sign(&pkh, "", &attestation(1, 0x22)).await.0, 200);
    let body = signer.wait_ready(200).await;
    assert_eq!(body["status"], "ready");
    assert_eq!(check(&body, "keys")["ok"], true);
    assert_eq!(check(&body, "watermark:file")["ok"], true);

    // The data directory disappears (an unmounted disk): readiness says which check failed and why, and
    // consensus signing is refused, not attempted.
    let dir = signer._data_dir.path().to_owned();
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    let body = signer.wait_ready(503).await;
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["failed"], serde_json::json!(["watermark:file"]));
    let detail = detail_of(&body, "watermark:file");
    assert!(detail.contains("cannot be written"), "{detail}");
    assert_eq!(signer.sign(&pkh, "", &attestation(2, 0x22)).await.0, 500);
    let m = signer.metrics().await;
    assert_eq!(series(&m, "tzkms_ready "), 0);
    assert_eq!(series(&m, "tzkms_health_check_ok{check=\"watermark:file\"}"), 0);
    // Readiness probes rewrite through the same path, so they fail too; the signature's write is one more.
    assert!(series(&m, "tzkms_watermark_file_writes_total{result=\"failed\"}") >= 2);
    assert_eq!(
        series(
            &m,
            &format!(
                "tzkms_requests_total{{route=\"sign\",kind=\"attestation\",key=\"{pkh}\",outcome=\"error\"}}"
            )
        ),
        1
    );

    // Back in place: green again, and the refused level can be signed now.
    std::fs::rename(&moved, &dir).unwrap();
    let body = signer.wait_ready(200).await;
    let detail = detail_of(&body, "watermark:file");
    assert!(detail.contains("written and fsync'd"), "{detail}");
    assert_eq!(signer.sign(&pkh, "", &attestation(2, 0x22)).await.0, 200);
    signer.stop().await;
}

#[tokio::test]
async fn readiness_turns_red_when_the_vault_fails_and_green_when_it_recovers() {
    let emu = emulator().await;
    let info = emu.create_key("baker", kv_emulator::Curve::P256).unwrap();
    let (pkh, _) = pkh_of(&info);
    let dir = tempfile::tempdir().unwrap();
    let azure = azure_config(&emu, dir.path());
    let signer = TestSigner::start_with(&[], |c| {
        c.azure = Some(azure);
        c.health.probe_interval_ms = 100;
        c.health.max_silence_ms = 60_000;
    })
    .await;
    assert_eq!(signer.sign(&pkh, "", &attestation(1, 0x22)).await.0, 200);
    let body = signer.wait_ready(200).await;
    let host = emu
        .url()
        .split("://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(check(&body, &format!("azure:{host}"))["ok"], true);
    let token = check(&body, &format!("azure-token:{host}"));
    assert_eq!(token["ok"], true);
    assert!(token["detail"].as_str().unwrap().contains("valid for"), "{token}");

    // The vault answers every call with 503: the prober finds out without any signing traffic.
    emu.faults().fail_next(Target::DataPlane, 1_000_000, 503);
    let body = signer.wait_ready(503).await;
    let vault = check(&body, &format!("azure:{host}"));
    assert_eq!(vault["ok"], false);
    let detail = vault["detail"].as_str().unwrap();
    assert!(detail.contains("503"), "{detail}");
    assert!(body["failed"]
        .as_array()
        .unwrap()
        .contains(&Value::from(format!("azure:{host}"))));
    let m = signer.metrics().await;
    assert!(series(&m, "tzkms_azure_requests_total{vault=\"") > 0, "{m}");
    assert!(
        m.lines().any(|l| l.starts_with("tzkms_azure_requests_total{")
            && l.contains("operation=\"probe\",result=\"server_error\"")),
        "{m}"
    );
    assert!(
        series(
            &m,
            &format!("tzkms_azure_retries_total{{vault=\"{host}\",cause=\"server_error\"}}")
        ) > 0
    );
    assert_eq!(
        series(&m, &format!("tzkms_health_check_ok{{check=\"azure:{host}\"}}")),
        0
    );

    // Recovery: the next probe succeeds and readiness is green again.
    emu.faults().reset();
    let body = signer.wait_ready(200).await;
    assert_eq!(check(&body, &format!("azure:{host}"))["ok"], true);
    assert_eq!(signer.sign(&pkh, "", &attestation(2, 0x22)).await.0, 200);
    let m = signer.metrics().await;
    // Billable operations: successful calls only (sign, probes, the startup list and get).
    let billable = series(&m, "tzkms_azure_billable_operations_total{");
    let sign_ok = emu.counters().succeeded(Operation::Sign);
    assert_eq!(
        series(
            &m,
            &format!("tzkms_azure_billable_operations_total{{vault=\"{host}\",operation=\"sign\"}}")
        ),
        sign_ok
    );
    assert!(billable > sign_ok);
    let cost = m
        .lines()
        .find(|l| l.starts_with("tzkms_azure_estimated_cost_usd_total{"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap();
    assert!((cost - billable as f64 * 0.15 / 10_000.0).abs() < 1e-12, "{cost}");
    assert_eq!(
        series(
            &m,
            &format!("tzkms_azure_token_fetches_total{{vault=\"{host}\",result=\"ok\"}}")
        ),
        1
    );
    assert!(
        series(
            &m,
            &format!("tzkms_azure_token_expiry_seconds{{vault=\"{host}\"}}")
        ) > 3000
    );
    signer.stop().await;
}

#[tokio::test]
async fn a_token_close_to_expiry_fails_readiness() {
    let emu = emulator().await;
    emu.create_key("baker", kv_emulator::Curve::P256).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let azure = azure_config(&emu, dir.path());
    // Tokens live an hour; a margin above that can never be met.
    let signer = TestSigner::start_with(&[], |c| {
        c.azure = Some(azure);
        c.health.token_margin_s = 7200;
    })
    .await;
    let body = signer.wait_ready(503).await;
    let failed: Vec<&str> = body["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 1, "{body}");
    assert!(failed[0].starts_with("azure-token:"), "{body}");
    let detail = detail_of(&body, "azure-token:");
    assert!(detail.contains("margin 7200s"), "{detail}");
    signer.stop().await;
}

/// A TCP forwarder to `upstream` that can cut every connection and refuse new ones, like a network
/// partition, and heal.
struct Cuttable {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Cuttable {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let flag = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cuts = cuts.clone();
                // Only cuts from now on end this connection.
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, up, cut }
    }

    fn partition(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn heal(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn readiness_follows_the_shared_watermark_table() {
    let azurite = crate::azurite::Azurite::start().await;
    let upstream: std::net::SocketAddr = azurite
        .endpoint
        .split("://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let proxy = Cuttable::start(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let mut table = crate::table::table_config(&azurite, dir.path());
    table.endpoint = azurite
        .endpoint
        .replace(&upstream.to_string(), &proxy.addr.to_string());
    table.budget_ms = 500;
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let signer = TestSigner::start_with(&[sk], |c| c.watermark.table = Some(table)).await;
    assert_eq!(signer.sign(&pkh, "", &attestation(1, 0x22)).await.0, 200);
    let body = signer.wait_ready(200).await;
    assert_eq!(check(&body, "watermark:file")["ok"], true);
    assert_eq!(check(&body, "watermark:table")["ok"], true);

    proxy.partition();
    let body = signer.wait_ready(503).await;
    assert_eq!(body["failed"], serde_json::json!(["watermark:table"]));
    let detail = detail_of(&body, "watermark:table");
    assert!(detail.contains("consensus signatures are refused"), "{detail}");
    assert_eq!(signer.sign(&pkh, "", &attestation(2, 0x22)).await.0, 500);
    // The table client's calls by operation and result: probes that worked, then ones cut off and retried.
    let m = signer.metrics().await;
    assert!(
        series(
            &m,
            "tzkms_table_requests_total{operation=\"upsert\",result=\"ok\"}"
        ) >= 1,
        "{m}"
    );
    let cut: u64 = ["connection", "timeout"]
        .iter()
        .map(|r| {
            m.lines()
                .filter(|l| {
                    l.starts_with("tzkms_table_requests_total{") && l.contains(&format!("result=\"{r}\""))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    assert!(cut >= 1, "{m}");
    assert!(series(&m, "tzkms_table_retries_total{") >= 1, "{m}");

    proxy.heal();
    signer.wait_ready(200).await;
    assert_eq!(signer.sign(&pkh, "", &attestation(2, 0x22)).await.0, 200);
    // The probe rows never show up as marks.
    let marks = tzkms::startup::table_store(&tzkms::config::Config::default(), &{
        let mut t = crate::table::table_config(&azurite, dir.path());
        t.table = body_table(&signer).await;
        t
    })
    .await
    .unwrap()
    .all()
    .await
    .unwrap();
    assert_eq!(marks.len(), 1, "{marks:?}");
    signer.stop().await;
}

/// The table name the signer's readiness names ("table <name> at <endpoint> writable").
async fn body_table(signer: &TestSigner) -> String {
    let body = signer.wait_ready(200).await;
    let detail = detail_of(&body, "watermark:table");
    detail.split(' ').nth(1).unwrap().to_owned()
}
