//! What operators do, with real processes: moving an instance from its file store to the shared table,
//! a vault that fails mid-signature with the shared table, keys copied to a new data directory, floors
//! set while serving, and commands pointed at a data directory that does not exist. Each scenario ends
//! in "no position was signed twice, no baker was left unable to sign".

use std::path::Path;

use kv_emulator::{Curve as EmuCurve, Operation};
use tezos::{BlsScheme, Curve, PublicKey, SecretKey, Signature};
use tzkms::config::Config;

use crate::azure::{emulator, pkh_of};
use crate::azure_cli::{write_config, CLIENT_SECRET};
use crate::azurite::Azurite;
use crate::helpers::{attestation, block, preattestation};
use crate::process::{run, Server};
use crate::table::table_config;

/// POSTs `payload` for `pk` to `server`: (status, signature or error message).
async fn post(server: &Server, pk: &PublicKey, payload: &[u8]) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/keys/{}?version=3", server.addr, pk.hash()))
        .body(format!("\"{}\"", hex::encode(payload)))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    let text = match status {
        200 => body["signature"].as_str().unwrap().to_owned(),
        _ => body[0]["msg"].as_str().unwrap_or_default().to_owned(),
    };
    (status, text)
}

/// Signs and checks the signature against `pk`.
async fn signed(server: &Server, pk: &PublicKey, payload: &[u8]) -> String {
    let (status, text) = post(server, pk, payload).await;
    assert_eq!(status, 200, "{text}");
    let sig: Signature = text.parse().unwrap();
    assert!(pk.verify(payload, &sig, BlsScheme::default()));
    text
}

async fn refused(server: &Server, pk: &PublicKey, payload: &[u8], needle: &str) {
    let (status, text) = post(server, pk, payload).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains(needle), "expected {needle:?} in: {text}");
}

fn table_toml(table: &tzkms::config::TableConfig) -> String {
    format!(
        "\n[watermark.table]\nendpoint = \"{}\"\ntable = \"{}\"\naccount_key_file = \"{}\"\n",
        table.endpoint,
        table.table,
        table.account_key_file.as_ref().unwrap().display()
    )
}

/// A key file copied into `data_dir` by hand, as an operator moving a key would: no marks, no floor.
fn copy_key(data_dir: &Path, key: &SecretKey) {
    std::fs::create_dir_all(data_dir).unwrap();
    tzkms::backend::file::write_key_file(data_dir, &key.public_key().hash().to_string(), &key.to_b58())
        .unwrap();
}

/// Instance A signs blocks on its file store alone; then a second instance B gets the same key and the
/// shared table. Before A joins the table, B cannot sign at all (nothing vouches for the key's past);
/// once A has restarted with the table, its marks are there: B refuses a conflicting block at A's
/// position and answers A's identical block with A's own signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_marks_reach_the_shared_table_before_another_instance_signs() {
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = table_config(&azurite, dir.path());
    let config = dir.path().join("shared.toml");
    std::fs::write(
        &config,
        format!("[keys]\ngenerate_if_empty = false\n{}", table_toml(&table)),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let key = SecretKey::generate(Curve::P256);
    let pk = key.public_key().clone();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).unwrap();
    tzkms::startup::write_new_key(&a_dir, &pk.hash().to_string(), &key).unwrap();
    copy_key(&b_dir, &key);

    let a = Server::start(&a_dir, &[]).await.unwrap();
    signed(&a, &pk, &block(500, 0, 1)).await;
    let a_501 = signed(&a, &pk, &block(501, 0, 1)).await;
    assert!(a.terminate().await.success());

    // B first, while A is down and the table has never heard of the key.
    let b = Server::start(&b_dir, &["--config", config]).await.unwrap();
    refused(&b, &pk, &block(500, 0, 2), "no signing history").await;
    refused(&b, &pk, &block(501, 0, 1), "no signing history").await;
    assert!(b.terminate().await.success());

    // A restarts with the table: its marks are raised into it before it serves.
    let a = Server::start(&a_dir, &["--config", config]).await.unwrap();
    let b = Server::start(&b_dir, &["--config", config]).await.unwrap();
    refused(&b, &pk, &block(500, 0, 2), "is not above the high watermark").await;
    refused(&b, &pk, &block(501, 0, 2), "already signed with different data").await;
    assert_eq!(
        signed(&b, &pk, &block(501, 0, 1)).await,
        a_501,
        "an identical block must get A's stored signature, never a fresh one"
    );
    // The key's history is the table's now: B moves on, and A refuses what B signed.
    let b_502 = signed(&b, &pk, &block(502, 0, 7)).await;
    refused(&a, &pk, &block(502, 0, 8), "already signed with different data").await;
    assert_eq!(signed(&a, &pk, &block(502, 0, 7)).await, b_502);

    let store = tzkms::startup::table_store(&Config::default(), &table)
        .await
        .unwrap();
    let marks = store.all().await.unwrap();
    let block_mark = marks
        .iter()
        .find(|(k, _)| k.pkh == pk.hash() && k.kind == tezos::ConsensusKind::Block)
        .map(|(_, m)| m.clone())
        .unwrap();
    assert_eq!((block_mark.level.0, block_mark.round.0), (502, 0));
    assert_eq!(block_mark.signature.map(|s| s.to_string()), Some(b_502));
    assert!(a.terminate().await.success());
    assert!(b.terminate().await.success());
    azurite.stop().await;
}

/// The vault answers 503 to every sign call: the request gets 500 and the shared table's reservation
/// is given back, so the same payload, or another one, at that position signs once the vault is back.
/// Also: a vault key this data directory has never vouched for is refused until its floor is set with
/// the documented command, which works while the signer runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_vault_call_leaves_no_position_blocked_in_the_shared_table() {
    let emu = emulator().await;
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = table_config(&azurite, dir.path());
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&table_toml(&table));
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();
    let pk = pkh_of(&emu.create_key("baker", EmuCurve::P256).unwrap()).1;
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();

    let server = Server::start(&data, &["--config", config]).await.unwrap();
    refused(&server, &pk, &preattestation(10, 0, 1), "tzkms watermark floor").await;
    let pkh = pk.hash().to_string();
    let (ok, out, err) = run(&["watermark", "floor", &pkh, "--level", "0"], &data).await;
    assert!(ok, "{err}");
    assert!(out.contains("floor of"), "{out}");

    let faults = emu.faults();
    faults.fail_next(Operation::Sign, 1000, 503);
    let (status, text) = post(&server, &pk, &preattestation(10, 0, 1)).await;
    assert_eq!(status, 500, "{text}");
    faults.reset();
    let first = signed(&server, &pk, &preattestation(10, 0, 1)).await;

    faults.fail_next(Operation::Sign, 1000, 503);
    assert_eq!(post(&server, &pk, &preattestation(11, 0, 1)).await.0, 500);
    faults.reset();
    // Another payload at the failed position: nothing was signed there, so it may be.
    let other = signed(&server, &pk, &preattestation(11, 0, 2)).await;
    refused(
        &server,
        &pk,
        &preattestation(11, 0, 1),
        "already signed with different data",
    )
    .await;
    assert_eq!(signed(&server, &pk, &preattestation(11, 0, 2)).await, other);

    let store = tzkms::startup::table_store(&Config::default(), &table)
        .await
        .unwrap();
    let marks = store.all().await.unwrap();
    let (_, mark) = marks
        .iter()
        .find(|(k, _)| k.kind == tezos::ConsensusKind::Preattestation)
        .unwrap();
    assert_eq!((mark.level.0, mark.round.0), (11, 0));
    assert_eq!(mark.signature.map(|s| s.to_string()), Some(other));
    assert_ne!(first, String::new());
    assert!(server.terminate().await.success());
    azurite.stop().await;
}

/// A key file copied to a new data directory right after another host signed with it must not sign
/// consensus there: the new store cannot know that past. The operator sets a floor while the signer
/// runs; the conflicting position stays refused and signing resumes above it. A key generated by
/// `tzkms keys generate` signs at once.
#[tokio::test]
async fn copied_keys_sign_no_consensus_until_a_floor_or_their_marks_vouch_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretKey::generate(Curve::Secp256k1);
    let pk = key.public_key().clone();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a_dir).unwrap();
    tzkms::startup::write_new_key(&a_dir, &pk.hash().to_string(), &key).unwrap();
    copy_key(&b_dir, &key);

    let a = Server::start(&a_dir, &[]).await.unwrap();
    signed(&a, &pk, &attestation(60, 1)).await;
    let b = Server::start(&b_dir, &[]).await.unwrap();
    refused(&b, &pk, &attestation(60, 2), "no signing history").await;
    refused(&b, &pk, &attestation(61, 2), "tzkms watermark floor").await;

    let pkh = pk.hash().to_string();
    let (ok, out, err) = run(&["watermark", "floor", &pkh, "--level", "60"], &b_dir).await;
    assert!(ok, "{err}");
    assert!(out.contains("set to level 60"), "{out}");
    refused(&b, &pk, &attestation(60, 2), "is not above the floor").await;
    signed(&b, &pk, &attestation(61, 2)).await;
    // A floor never goes down.
    let (ok, out, _) = run(&["watermark", "floor", &pkh, "--level", "5"], &b_dir).await;
    assert!(ok && out.contains("kept at level 60"), "{out}");
    assert!(a.terminate().await.success());
    assert!(b.terminate().await.success());

    // Imported keys are told what they need; generated keys sign at once.
    let c_dir = dir.path().join("c");
    let (ok, out, err) = run(&["keys", "generate", "--curve", "p256"], &c_dir).await;
    assert!(ok, "{err}");
    let generated: PublicKey = out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .parse()
        .unwrap();
    let (ok, _, err) = crate::process::run_with(
        &["keys", "import"],
        &c_dir,
        &[],
        Some(&format!(
            "{}\n",
            SecretKey::generate(Curve::Ed25519).to_b58().as_str()
        )),
    )
    .await;
    assert!(ok && err.contains("tzkms watermark floor"), "{err}");
    let c = Server::start(&c_dir, &[]).await.unwrap();
    signed(&c, &generated, &attestation(1, 1)).await;
    assert!(c.terminate().await.success());
}

/// Commands that read or serve a data directory never create a missing one: a mistyped path is an
/// error naming where the path came from, not an empty store or a freshly generated key.
#[tokio::test]
async fn a_missing_data_directory_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tzkms-dtaa");
    for args in [
        &["keys", "list"][..],
        &["config", "check"],
        &["watermark", "show"],
        &["watermark", "export"],
        &[
            "watermark",
            "floor",
            "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx",
            "--level",
            "1",
        ],
    ] {
        let (ok, _, err) = run(args, &missing).await;
        assert!(!ok, "{args:?} succeeded");
        assert!(
            err.contains("does not exist") && err.contains("--data-dir, else TZKMS_DATA_DIR"),
            "{args:?}: {err}"
        );
        assert!(!missing.exists(), "{args:?} created the directory");
    }
    let err = Server::start(&missing, &[]).await.err().unwrap();
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        !missing.exists(),
        "serve created the directory (and would have generated a key)"
    );

    // An existing directory without a store: show and export say so instead of printing nothing.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for args in [&["watermark", "show"][..], &["watermark", "export"]] {
        let (ok, _, err) = run(args, &empty).await;
        assert!(!ok && err.contains("has no watermark store"), "{args:?}: {err}");
    }
    // Importing into a new directory is how a migration starts: allowed.
    let export = dir.path().join("marks.json");
    std::fs::write(
        &export,
        tzkms::watermark::interchange::encode(&Default::default()),
    )
    .unwrap();
    let (ok, _, err) = run(&["watermark", "import", export.to_str().unwrap()], &missing).await;
    assert!(ok, "{err}");
}

/// A relative `data_dir` in a config file is beside the file, wherever the command runs from.
#[tokio::test]
async fn a_relative_data_dir_in_a_config_file_is_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::create_dir(etc.join("state")).unwrap();
    let config = etc.join("tzkms.toml");
    std::fs::write(&config, "data_dir = \"state\"\n").unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let out = tokio::process::Command::new(crate::process::BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "keys",
            "generate",
            "--curve",
            "p256",
        ])
        .current_dir(&elsewhere)
        .env_remove("TZKMS_DATA_DIR")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let keys: Vec<_> = std::fs::read_dir(etc.join("state/keys")).unwrap().collect();
    assert_eq!(keys.len(), 1);
    assert!(!elsewhere.join("state").exists());
}

/// The `tzkms …` lines of the first shell block after `marker` in `docs/<doc>`, as written there.
pub(crate) fn documented_commands(doc: &str, marker: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let from = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} not in {doc}"));
    let block = text[from..]
        .split("```sh")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let lines: Vec<String> = block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tzkms "))
        .map(str::to_owned)
        .collect();
    assert!(!lines.is_empty(), "no tzkms command after {marker:?} in {doc}");
    lines
}

/// Runs documented command lines with bash in `dir`, with this build's `tzkms` first on PATH.
pub(crate) async fn run_documented(lines: &[String], dir: &Path) {
    let bin_dir = Path::new(crate::process::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in lines {
        let out = tokio::process::Command::new("bash")
            .args(["-c", line])
            .current_dir(dir)
            .env("PATH", &path)
            .env_remove("TZKMS_DATA_DIR")
            .env_remove("TZKMS_CONFIG")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "`{line}` failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The migration steps of docs/high-availability.md and docs/watermark.md, run as written: after them, the
/// next instance refuses what the old one signed and replays its stored signatures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_migrations_run_as_written() {
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path();
    let key = SecretKey::generate(Curve::P256);
    let pk = key.public_key().clone();

    // A single instance on its file store, configured by tzkms.toml beside its data directory.
    std::fs::write(
        scratch.join("tzkms.toml"),
        "data_dir = \"data\"\n[keys]\ngenerate_if_empty = false\n",
    )
    .unwrap();
    std::fs::create_dir(scratch.join("data")).unwrap();
    tzkms::startup::write_new_key(&scratch.join("data"), &pk.hash().to_string(), &key).unwrap();
    let a = Server::start(&scratch.join("data"), &[]).await.unwrap();
    signed(&a, &pk, &block(500, 0, 1)).await;
    let a_501 = signed(&a, &pk, &block(501, 0, 1)).await;
    assert!(a.terminate().await.success());
    // Step 2 of the guide: the table section goes into the instance's configuration.
    let table = table_config(&azurite, scratch);
    let mut text = std::fs::read_to_string(scratch.join("tzkms.toml")).unwrap();
    text.push_str(&table_toml(&table));
    std::fs::write(scratch.join("tzkms.toml"), &text).unwrap();
    run_documented(
        &documented_commands("high-availability.md", "## Migrating a single instance"),
        scratch,
    )
    .await;
    // A second instance with a copy of the key and the table, the first one still stopped.
    let b_dir = scratch.join("b");
    copy_key(&b_dir, &key);
    let b = Server::start(
        &b_dir,
        &["--config", scratch.join("tzkms.toml").to_str().unwrap()],
    )
    .await
    .unwrap();
    refused(&b, &pk, &block(500, 0, 2), "is not above the high watermark").await;
    refused(&b, &pk, &block(501, 0, 2), "already signed with different data").await;
    assert_eq!(signed(&b, &pk, &block(501, 0, 1)).await, a_501);
    assert!(b.terminate().await.success());

    // docs/watermark.md: moving a key between instances with old.toml and new.toml.
    let old = scratch.join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(scratch.join("old.toml"), "data_dir = \"old\"\n").unwrap();
    std::fs::write(scratch.join("new.toml"), "data_dir = \"new\"\n").unwrap();
    tzkms::startup::write_new_key(&old, &pk.hash().to_string(), &key).unwrap();
    let server = Server::start(&old, &[]).await.unwrap();
    let old_60 = signed(&server, &pk, &attestation(60, 1)).await;
    assert!(server.terminate().await.success());
    run_documented(
        &documented_commands("watermark.md", "Moving a key between tzkms instances"),
        scratch,
    )
    .await;
    copy_key(&scratch.join("new"), &key);
    let server = Server::start(&scratch.join("new"), &[]).await.unwrap();
    refused(
        &server,
        &pk,
        &attestation(60, 2),
        "already signed with different data",
    )
    .await;
    assert_eq!(signed(&server, &pk, &attestation(60, 1)).await, old_60);
    signed(&server, &pk, &attestation(61, 1)).await;
    assert!(server.terminate().await.success());
    azurite.stop().await;
}

/// `azure keys create` makes a key with no past: the data directory it names vouches for it, so the
/// signer serving that directory signs its consensus at once. An imported vault key is told what it needs.
#[tokio::test]
async fn a_key_created_in_the_vault_by_tzkms_signs_consensus_at_once() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    let (ok, out, err) = run(
        &[
            "--config", config, "azure", "keys", "create", "--name", "fresh", "--curve", "p256",
        ],
        &data,
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("consensus: vouched for"), "{out}");
    let pk = pkh_of(&emu.key("fresh").unwrap()).1;
    let server = Server::start(&data, &["--config", config]).await.unwrap();
    signed(&server, &pk, &preattestation(5, 0, 1)).await;
    assert!(server.terminate().await.success());
}
