//! The operator commands against the real binary: watermark show/set/export/import (octez-signer and
//! Signatory files), the data-directory lock, and refusal to start on a damaged store.

use std::path::Path;

use serde_json::{json, Value};
use tezos::{Curve, SecretKey};

use crate::process::{run, Server};

const MAINNET: &str = "NetXdQprcVkpaWU";
const TZ1: &str = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx";
const TZ3: &str = "tz3ZxowXGSjiVq227GQcwKdz87rKhq62rY4t";

async fn marks(dir: &Path) -> Vec<Value> {
    let (ok, out, err) = run(&["watermark", "show", "--json"], dir).await;
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["format"], "tzkms-watermarks");
    assert_eq!(doc["version"], 1);
    doc["marks"].as_array().unwrap().clone()
}

fn find<'a>(marks: &'a [Value], pkh: &str, kind: &str) -> &'a Value {
    marks
        .iter()
        .find(|m| m["pkh"] == pkh && m["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} mark for {pkh}: {marks:?}"))
}

fn write(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

#[tokio::test]
async fn octez_signer_watermarks_import_with_their_signatures_and_only_raise() {
    let dir = tempfile::tempdir().unwrap();
    let octez = tempfile::tempdir().unwrap();
    let sig =
        "sigeeho3jK4MZKsyqcTc9mjhtz9w6enG3AFniufgUXCuXFW7VjShxLoNmxqkQSRYUwP1LHRMere5LrvxcqLgU9KmDGN356Yz";
    write(
        &octez.path().join("block_high_watermarks"),
        &json!({ MAINNET: { TZ1: { "level": 100, "round": 1, "hash": "11".repeat(32), "signature": sig } } }),
    );
    write(
        &octez.path().join("attestation_high_watermarks"),
        &json!({ MAINNET: { TZ1: { "level": 99, "hash": "22".repeat(32) },
                             TZ3: { "level": 7, "round": 0, "hash": "33".repeat(32) } } }),
    );
    let (ok, out, err) = run(
        &[
            "watermark",
            "import",
            "--from",
            "octez",
            octez.path().to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("3 of 3 marks raised"), "{out}");
    let m = marks(dir.path()).await;
    let block = find(&m, TZ1, "block");
    assert_eq!(
        (block["level"].as_u64(), block["round"].as_u64()),
        (Some(100), Some(1))
    );
    assert_eq!(block["hash"], "11".repeat(32));
    assert_eq!(block["signature"], sig);
    // A mark without a round (pre-Tenderbake) covers every round of its level, as in octez-signer.
    let att = find(&m, TZ1, "attestation");
    assert_eq!(
        (att["level"].as_u64(), att["round"].as_u64()),
        (Some(99), Some(u64::from(tzkms::watermark::WHOLE_LEVEL.0)))
    );
    assert!(att.get("signature").is_none());

    // Importing lower marks changes nothing.
    write(
        &octez.path().join("block_high_watermarks"),
        &json!({ MAINNET: { TZ1: { "level": 50, "round": 0, "hash": "44".repeat(32) } } }),
    );
    std::fs::remove_file(octez.path().join("attestation_high_watermarks")).unwrap();
    let (ok, out, _) = run(
        &[
            "watermark",
            "import",
            "--from",
            "octez",
            octez.path().to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    assert!(ok);
    assert!(out.contains("0 of 1 marks raised"), "{out}");
    assert_eq!(find(&marks(dir.path()).await, TZ1, "block")["level"], 100);
}

#[tokio::test]
async fn signatory_watermarks_import_by_chain_file_and_merge_attestation_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let signatory = tempfile::tempdir().unwrap();
    let v2 = signatory.path().join("watermark_v2");
    std::fs::create_dir(&v2).unwrap();
    let vh = "vh3RyyzU6KPfhX1kcySCwGQ2sNmeXm5HrrqavVd4Ro8YyydK6A77";
    write(
        &v2.join(format!("{MAINNET}.json")),
        &json!({ TZ3: {
            "preattestation": { "level": 10, "round": 2, "hash": vh },
            "attestation": { "level": 10, "round": 1, "hash": vh },
            "attestation_with_dal": { "level": 11, "round": 0, "hash": vh },
            "generic": { "level": 0, "round": 0 }
        } }),
    );
    let (ok, out, err) = run(
        &["watermark", "import", "--from", "signatory", v2.to_str().unwrap()],
        dir.path(),
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("2 of 2 marks raised"), "{out}");
    let m = marks(dir.path()).await;
    let pre = find(&m, TZ3, "preattestation");
    assert_eq!(
        (pre["level"].as_u64(), pre["round"].as_u64()),
        (Some(10), Some(2))
    );
    assert_eq!(
        pre["hash"],
        "e74901b390076136d48508323d0d341a305c673b239646c232395928450a5907"
    );
    // attestation and attestation_with_dal share tzkms's attestation mark: the highest wins.
    assert_eq!(find(&m, TZ3, "attestation")["level"], 11);
    assert_eq!(find(&m, TZ3, "attestation")["chain"], MAINNET);
}

#[tokio::test]
async fn export_then_import_round_trips_and_malformed_files_are_refused() {
    let a = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(
        &[
            "watermark",
            "set",
            "--pkh",
            TZ1,
            "--chain",
            MAINNET,
            "--kind",
            "block",
            "--level",
            "42",
            "--round",
            "3",
        ],
        a.path(),
    )
    .await;
    assert!(ok, "{err}");
    let export = a.path().join("export.json");
    let (ok, _, _) = run(
        &["watermark", "export", "--out", export.to_str().unwrap()],
        a.path(),
    )
    .await;
    assert!(ok);
    let b = tempfile::tempdir().unwrap();
    let (ok, out, _) = run(&["watermark", "import", export.to_str().unwrap()], b.path()).await;
    assert!(ok);
    assert!(out.contains("1 of 1 marks raised"), "{out}");
    assert_eq!(marks(a.path()).await, marks(b.path()).await);

    let bad = a.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"format\":\"tzkms-watermarks\",\"version\":1,\"marks\":[{\"oops\":1}]}",
    )
    .unwrap();
    let (ok, _, err) = run(&["watermark", "import", bad.to_str().unwrap()], b.path()).await;
    assert!(!ok);
    assert!(err.contains("unknown field"), "{err}");
    // Setting a lower mark by hand does not lower it.
    let (ok, out, _) = run(
        &[
            "watermark",
            "set",
            "--pkh",
            TZ1,
            "--chain",
            MAINNET,
            "--kind",
            "block",
            "--level",
            "41",
        ],
        b.path(),
    )
    .await;
    assert!(ok);
    assert!(out.contains("0 of 1 marks raised"), "{out}");
}

#[tokio::test]
async fn a_running_server_holds_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    tzkms::startup::write_new_key(&data, "k", &sk).unwrap();
    let server = Server::start(&data, &[]).await.unwrap();
    // A second server refuses.
    let second = Server::start(&data, &[])
        .await
        .err()
        .expect("second server must refuse");
    assert!(second.contains("in use by another tzkms process"), "{second}");
    // Changing marks needs the lock; reading does not.
    let (ok, _, err) = run(
        &[
            "watermark",
            "set",
            "--pkh",
            TZ1,
            "--chain",
            MAINNET,
            "--level",
            "5",
        ],
        &data,
    )
    .await;
    assert!(!ok);
    assert!(err.contains("needs tzkms stopped"), "{err}");
    let (ok, out, _) = run(&["watermark", "show"], &data).await;
    assert!(ok, "{out}");
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
    let (ok, _, err) = run(
        &[
            "watermark",
            "set",
            "--pkh",
            TZ1,
            "--chain",
            MAINNET,
            "--level",
            "5",
        ],
        &data,
    )
    .await;
    assert!(ok, "{err}");
}

/// POSTs `payload` to `/keys/<pkh>` of the server at `addr`: the status.
async fn sign_at(addr: std::net::SocketAddr, pkh: &tezos::PublicKeyHash, payload: &[u8]) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/keys/{pkh}"))
        .header("content-type", "application/json")
        .body(format!("\"{}\"", hex::encode(payload)))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The lock is on the directory itself: deleting any file in it (the lock file of older versions) does not
/// let a second server in, so two conflicting preattestations can never both be signed.
#[tokio::test]
async fn deleting_files_in_the_data_directory_does_not_release_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    tzkms::startup::write_new_key(&data, "k", &sk).unwrap();
    let first = Server::start(&data, &[]).await.unwrap();
    let legacy = data.join(tzkms::startup::LEGACY_LOCK_FILE);
    if legacy.exists() {
        std::fs::remove_file(&legacy).unwrap();
    }
    let second = Server::start(&data, &[]).await;
    let preattestation = crate::helpers::preattestation;
    match second {
        Err(log) => {
            assert!(log.contains("is in use by another tzkms process"), "{log}");
            assert!(
                log.contains(&format!("(pid {})", first.child.id().unwrap())),
                "{log}"
            );
        }
        Ok(second) => {
            // The bug: each server signs one of two conflicting preattestations at the same level.
            let a = sign_at(first.addr, &pkh, &preattestation(7, 0, 1)).await;
            let b = sign_at(second.addr, &pkh, &preattestation(7, 0, 2)).await;
            second.kill9().await;
            panic!("a second server started on a locked data directory; conflicting preattestations got {a} and {b}");
        }
    }
    // The second server exited (non-zero) before listening: the first one alone decides, and refuses the
    // conflicting payload.
    assert_eq!(sign_at(first.addr, &pkh, &preattestation(7, 0, 1)).await, 200);
    assert_eq!(sign_at(first.addr, &pkh, &preattestation(7, 0, 2)).await, 409);
    // The refusal names the directory and says what to do, with and without backtraces.
    for backtrace in [None, Some("1")] {
        let mut command = tokio::process::Command::new(crate::process::BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env_remove("RUST_BACKTRACE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(value) = backtrace {
            command.env("RUST_BACKTRACE", value);
        }
        let out = command.output().await.unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains(&format!("{} is in use by another tzkms process", data.display())),
            "{err}"
        );
        assert!(err.contains("stop it first"), "{err}");
    }
    assert!(first.terminate().await.success());
}

#[tokio::test]
async fn damaged_or_lost_stores_stop_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    tzkms::startup::write_new_key(&data, "k", &sk).unwrap();
    let server = Server::start(&data, &[]).await.unwrap();
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
    let store = data.join("watermarks.json");
    let text = std::fs::read_to_string(&store).unwrap();

    std::fs::write(&store, &text[..text.len() / 2]).unwrap();
    let err = Server::start(&data, &[])
        .await
        .err()
        .expect("truncated store must stop the server");
    assert!(
        err.contains("unreadable") && err.contains("will not sign"),
        "{err}"
    );

    std::fs::write(&store, "garbage").unwrap();
    assert!(Server::start(&data, &[])
        .await
        .err()
        .unwrap()
        .contains("unreadable"));

    std::fs::remove_file(&store).unwrap();
    let err = Server::start(&data, &[])
        .await
        .err()
        .expect("a lost store must stop the server");
    assert!(err.contains("will not start again from level 0"), "{err}");

    std::fs::write(&store, &text).unwrap();
    let server = Server::start(&data, &[]).await.unwrap();
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn keys_proof_prints_the_vectors_proofs_of_possession_and_refuses_other_curves() {
    let v = crate::helpers::vectors("signatures.json");
    for vector in v["bls_proofs_of_possession"].as_array().unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let sk: SecretKey = vector["sk"].as_str().unwrap().parse().unwrap();
        let pkh = vector["pkh"].as_str().unwrap();
        tzkms::startup::write_new_key(dir.path(), pkh, &sk).unwrap();
        let mut args = vec!["keys", "proof", pkh];
        if let Some(pk) = vector["override_pk"].as_str() {
            args.extend(["--override-public-key", pk]);
        }
        let (ok, out, err) = run(&args, dir.path()).await;
        assert!(ok, "{}: {err}", vector["id"]);
        assert_eq!(out.trim(), vector["proof"].as_str().unwrap(), "{}", vector["id"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let tz1 = SecretKey::generate(Curve::Ed25519);
    let tz1_pkh = tz1.public_key().hash().to_string();
    tzkms::startup::write_new_key(dir.path(), &tz1_pkh, &tz1).unwrap();
    let (ok, _, err) = run(&["keys", "proof", &tz1_pkh], dir.path()).await;
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{tz1_pkh} is not a tz4 key (ed25519 curve): only tz4 (BLS) keys"
        )),
        "{err}"
    );
    let tz4 = SecretKey::generate(Curve::Bls);
    let tz4_pkh = tz4.public_key().hash().to_string();
    tzkms::startup::write_new_key(dir.path(), &tz4_pkh, &tz4).unwrap();
    let edpk = tz1.public_key().to_string();
    let (ok, _, err) = run(
        &["keys", "proof", &tz4_pkh, "--override-public-key", &edpk],
        dir.path(),
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("--override-public-key must be a BLS public key"),
        "{err}"
    );
}
