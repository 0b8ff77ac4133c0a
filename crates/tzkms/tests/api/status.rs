//! `tzkms status` against the real binary: the table and the JSON of `GET /status` on the operations
//! listener, for a file key and for a vault key (the emulator), ready and not ready; and its error when
//! nothing listens where it looks.

use std::path::Path;

use kv_emulator::{Curve as EmuCurve, Target};
use serde_json::Value;
use tezos::{Curve, SecretKey};

use crate::azure::{emulator, pkh_of};
use crate::azure_cli::{write_config, CLIENT_SECRET};
use crate::helpers::{attestation, block, preattestation};
use crate::process::run;
use crate::reload::Running;

const MAINNET: &str = "NetXdQprcVkpaWU";

/// `tzkms status --url http://<ops> [--json]`: (success, stdout, stderr).
async fn status(signer: &Running, data: &Path, json: bool) -> (bool, String, String) {
    let url = format!("http://{}", signer.ops);
    let mut args = vec!["status", "--url", url.as_str()];
    if json {
        args.push("--json");
    }
    run(&args, data).await
}

async fn status_json(signer: &Running, data: &Path) -> Value {
    let (_, out, err) = status(signer, data, true).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json is not JSON ({e}): {out}\n{err}"))
}

/// The marks of `key` as (kind, level, round) on mainnet.
fn marks(key: &Value) -> Vec<(String, u64, String)> {
    let mut out: Vec<_> = key["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["chain"], MAINNET, "{m}");
            (
                m["kind"].as_str().unwrap().to_owned(),
                m["level"].as_u64().unwrap(),
                m["round"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn status_of_a_file_key_signer_shows_its_key_marks_signatures_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    tzkms::startup::write_new_key(&data, "baker", &sk).unwrap();
    let config = dir.path().join("tzkms.toml");
    std::fs::write(&config, "[keys]\ngenerate_if_empty = false\n").unwrap();
    let signer = Running::start(&data, &config, &[]).await;
    for payload in [
        block(5, 1, 1),
        preattestation(6, 0, 1),
        attestation(6, 1),
        attestation(7, 1),
    ] {
        assert_eq!(signer.sign(&pkh, &payload).await, 200);
    }

    let s = status_json(&signer, &data).await;
    assert_eq!(s["ready"], true, "{s}");
    assert_eq!(s["failed"], serde_json::json!([]));
    assert_eq!(s["signatures"], 4);
    assert_eq!(s["vaults"], serde_json::json!([]));
    let keys = s["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{s}");
    assert_eq!(keys[0]["pkh"], pkh.to_string());
    assert_eq!(keys[0]["backend"], "file");
    assert_eq!(keys[0]["signatures"]["attestation"], 2);
    assert_eq!(
        marks(&keys[0]),
        vec![
            ("attestation".into(), 7, "0".into()),
            ("block".into(), 5, "1".into()),
            ("preattestation".into(), 6, "0".into()),
        ]
    );
    let checks = s["checks"].as_array().unwrap();
    let keys_check = checks.iter().find(|c| c["name"] == "keys").unwrap();
    assert_eq!(keys_check["ok"], true);
    assert_eq!(keys_check["detail"], "1 key(s) served");
    // The JSON carries no key material: the public address only.
    assert!(!s.to_string().contains(&sk.to_b58().to_string()));

    let (ok, table, err) = status(&signer, &data, false).await;
    assert!(ok, "{err}");
    let first = table.lines().next().unwrap();
    assert!(first.ends_with(": ready"), "{table}");
    assert!(table.contains(&format!("  {pkh}  file ")), "{table}");
    let block_line = table
        .lines()
        .find(|l| l.trim_start().starts_with("block"))
        .unwrap();
    assert_eq!(
        block_line.split_whitespace().collect::<Vec<_>>(),
        ["block", "level", "5", "round", "1", "on", MAINNET],
        "{table}"
    );
    assert!(table.contains("signatures so far: 4"), "{table}");
    assert!(table
        .lines()
        .any(|l| l.trim_start().starts_with("ok") && l.contains("keys")));
    assert!(signer.server.terminate().await.success());
}

#[tokio::test]
async fn status_of_a_vault_signer_shows_latency_and_cost_then_says_why_it_is_not_ready() {
    let emu = emulator().await;
    let (pkh, _) = pkh_of(&emu.create_key("baker", EmuCurve::P256K).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    tzkms::watermark::floor::raise(&data, &pkh, None, "created for this test").unwrap();
    let signer = Running::start(&data, &config, &[]).await;
    assert_eq!(signer.sign(&pkh, &attestation(3, 1)).await, 200);
    assert_eq!(signer.sign(&pkh, &attestation(4, 1)).await, 200);

    let s = status_json(&signer, &data).await;
    assert_eq!(s["ready"], true, "{s}");
    assert_eq!(s["signatures"], 2);
    let key = &s["keys"][0];
    assert_eq!(key["pkh"], pkh.to_string());
    assert_eq!(key["backend"], "azure");
    assert!(key["name"].as_str().unwrap().starts_with("baker/"), "{key}");
    assert_eq!(marks(key), vec![("attestation".into(), 4, "0".into())]);
    let vault = &s["vaults"][0];
    assert_eq!(vault["healthy"], true, "{vault}");
    assert!(vault["latency_ms"]["sign"].as_f64().unwrap() > 0.0, "{vault}");
    let billable = vault["billable_operations"].as_u64().unwrap();
    assert!(billable >= 2, "two signatures at least: {vault}");
    let cost = vault["estimated_cost_usd"].as_f64().unwrap();
    assert!(
        (cost - billable as f64 * 0.15 / 10_000.0).abs() < 1e-12,
        "{vault}"
    );
    assert_eq!(s["estimated_cost_usd"].as_f64().unwrap(), cost);
    // Neither the client secret nor a token is in the answer.
    assert!(!s.to_string().contains(emu.client_secret()));
    assert!(!s.to_string().contains("eyJ"), "a JWT in the status: {s}");

    let (ok, table, err) = status(&signer, &data, false).await;
    assert!(ok, "{err}");
    let host = vault["vault"].as_str().unwrap();
    assert!(table.contains(&format!("vault {host}: healthy")), "{table}");
    assert!(
        table.contains("mean latency: ") && table.contains("sign "),
        "{table}"
    );
    assert!(table.contains("estimated Azure cost so far: $"), "{table}");

    // The vault starts failing: the next signature fails, and status says the signer is not ready, and why.
    emu.faults().fail_next(Target::DataPlane, 10_000, 503);
    assert_ne!(signer.sign(&pkh, &attestation(5, 1)).await, 200);
    let s = status_json(&signer, &data).await;
    assert_eq!(s["ready"], false, "{s}");
    let failing = format!("azure:{host}");
    assert_eq!(s["failed"], serde_json::json!([failing]), "{s}");
    assert_eq!(s["vaults"][0]["healthy"], false);
    let detail = s["vaults"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the last call failed") && detail.contains("503"),
        "{detail}"
    );

    let (ok, table, _) = status(&signer, &data, false).await;
    assert!(!ok, "not ready must exit non-zero:\n{table}");
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .contains(&format!("NOT READY ({failing})")),
        "{table}"
    );
    let reason = table.lines().find(|l| l.contains("FAIL")).unwrap();
    assert!(reason.contains(&failing) && reason.contains("503"), "{table}");
    assert!(table.contains(&format!("vault {host}: FAILING")), "{table}");
    emu.faults().reset();
    assert!(signer.server.terminate().await.success());
}

#[tokio::test]
async fn status_names_the_address_it_asked_and_how_to_set_it_when_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = dir.path().join("tzkms.toml");
    std::fs::write(&config, format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let (ok, out, err) = run(&["--config", config.to_str().unwrap(), "status"], &data).await;
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("at http://127.0.0.1:{port}: connection refused")),
        "{err}"
    );
    assert!(err.contains("[metrics] listen") && err.contains("--url"), "{err}");

    // Without metrics.listen there is nothing to ask: it says which setting to add.
    std::fs::write(&config, "").unwrap();
    let (ok, _, err) = run(&["--config", config.to_str().unwrap(), "status"], &data).await;
    assert!(!ok);
    assert!(
        err.contains("no metrics.listen") && err.contains("[metrics] listen = \"127.0.0.1:9732\""),
        "{err}"
    );
}
