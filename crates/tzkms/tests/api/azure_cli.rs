//! The real binary with the Azure backend: `azure keys` import of every key format, backup and restore,
//! and the credentials that only a process environment can select (App Service identity, Azure CLI).

use std::path::{Path, PathBuf};

use kv_emulator::{Curve as EmuCurve, Emulator, Operation};
use pkcs8::{EncodePrivateKey, LineEnding};
use tezos::{BlsScheme, Curve, PublicKey, SecretKey, Signature};

use crate::azure::{emulator, pkh_of};
use crate::process::{run_with, Server};

/// A config file pointing at the emulator with `credential` as the [azure.credential] body.
pub fn write_config(emu: &Emulator, dir: &Path, credential: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("azure-secret");
    std::fs::write(&secret, emu.client_secret()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.join("tzkms.toml");
    let text = format!(
        "{}[keys]\ngenerate_if_empty = false\n\n[azure]\nvault_url = \"{}\"\nca_file = \"{}\"\n\n[azure.credential]\n{}\n",
        crate::helpers::GENERIC_UNCHECKED_TOML,
        emu.url(),
        emu.ca_pem_path().unwrap().display(),
        credential
            .replace("{tenant}", emu.tenant_id())
            .replace("{client}", emu.client_id())
            .replace("{secret_file}", &secret.display().to_string())
            .replace("{authority}", emu.authority_host())
    );
    std::fs::write(&config, text).unwrap();
    config
}

pub const CLIENT_SECRET: &str =
    "kind = \"client_secret\"\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\n\
                             client_secret_file = \"{secret_file}\"\nauthority_host = \"{authority}\"";

async fn sign_and_verify(server: &Server, pk: &PublicKey) {
    let payload = b"\x03\x42\x42";
    let response = reqwest::Client::new()
        .post(format!("http://{}/keys/{}?version=3", server.addr, pk.hash()))
        .body(format!("\"{}\"", hex::encode(payload)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
    assert!(pk.verify(payload, &sig, BlsScheme::default()));
}

#[tokio::test]
async fn every_key_format_imports_and_then_signs() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();

    let p2sk = SecretKey::generate(Curve::P256);
    let spsk = SecretKey::generate(Curve::Secp256k1);
    let p2esk_key = SecretKey::generate(Curve::P256);
    let p2esk = tezos::encrypted::encrypt(&p2esk_key, b"tezos-pw");
    let sec1 = p256::SecretKey::random(&mut rand_core::OsRng);
    let pkcs8_enc = k256::SecretKey::random(&mut rand_core::OsRng);
    let sec1_pk = PublicKey::from_bytes(Curve::P256, &sec1.public_key().to_sec1_bytes()).unwrap();
    let pkcs8_pk = PublicKey::from_bytes(Curve::Secp256k1, &pkcs8_enc.public_key().to_sec1_bytes()).unwrap();
    let cases: Vec<(&str, String, PublicKey)> = vec![
        ("tez-p2sk", p2sk.to_b58().to_string(), p2sk.public_key().clone()),
        (
            "tez-spsk",
            format!("unencrypted:{}", spsk.to_b58().as_str()),
            spsk.public_key().clone(),
        ),
        ("tez-p2esk", p2esk, p2esk_key.public_key().clone()),
        (
            "pem-sec1",
            sec1.to_sec1_pem(LineEnding::LF).unwrap().to_string(),
            sec1_pk,
        ),
        (
            "pem-pkcs8-encrypted",
            pkcs8_enc
                .to_pkcs8_encrypted_pem(&mut rand_core::OsRng, b"pem-pass", LineEnding::LF)
                .unwrap()
                .to_string(),
            pkcs8_pk,
        ),
    ];
    let env = [
        ("TZKMS_KEY_PASSWORD", "tezos-pw"),
        ("TZKMS_PEM_PASSPHRASE", "pem-pass"),
    ];
    for (name, input, pk) in &cases {
        let (ok, out, err) = run_with(
            &["--config", config, "azure", "keys", "import", "--name", name],
            &data,
            &env,
            Some(input),
        )
        .await;
        assert!(ok, "{name}: {err}");
        assert_eq!(out.lines().next().unwrap(), pk.hash().to_string(), "{name}");
        // The vault now holds the key; its public half is the one the file gave.
        let info = emu.key(name).unwrap();
        assert_eq!(&pkh_of(&info).1, pk);
    }
    // Without the passphrase an encrypted PEM is refused, and nothing is imported.
    let (ok, _, err) = run_with(
        &["--config", config, "azure", "keys", "import", "--name", "no-pass"],
        &data,
        &[],
        Some(&cases[4].1),
    )
    .await;
    assert!(!ok && err.contains("TZKMS_PEM_PASSPHRASE"), "{err}");
    assert!(emu.key("no-pass").is_none());

    let (ok, out, err) = run_with(
        &["--config", config, "azure", "keys", "list", "--json"],
        &data,
        &[],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), cases.len());

    let server = Server::start(&data, &["--config", config]).await.unwrap();
    for (_, _, pk) in &cases {
        sign_and_verify(&server, pk).await;
    }
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn backup_then_restore_brings_a_purged_key_back() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let (ok, out, err) = run_with(
        &[
            "--config",
            config,
            "azure",
            "keys",
            "create",
            "--name",
            "baker",
            "--curve",
            "secp256k1",
        ],
        &data,
        &[],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let pkh = out.lines().next().unwrap().to_owned();
    assert!(pkh.starts_with("tz2"), "{out}");
    let blob = dir.path().join("baker.backup");
    let (ok, _, err) = run_with(
        &[
            "--config",
            config,
            "azure",
            "keys",
            "backup",
            "baker",
            blob.to_str().unwrap(),
        ],
        &data,
        &[],
        None,
    )
    .await;
    assert!(ok, "{err}");

    // Delete and purge the key through the REST API, as an operator's mistake would.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap())
        .build()
        .unwrap();
    for (method, path) in [
        (reqwest::Method::DELETE, "/keys/baker"),
        (reqwest::Method::DELETE, "/deletedkeys/baker"),
    ] {
        let r = http
            .request(method, format!("{}{path}?api-version=2025-07-01", emu.url()))
            .bearer_auth(emu.issue_token())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    assert!(emu.key("baker").is_none());

    let (ok, out, err) = run_with(
        &[
            "--config",
            config,
            "azure",
            "keys",
            "restore",
            blob.to_str().unwrap(),
        ],
        &data,
        &[],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().next().unwrap(), pkh);
    let server = Server::start(&data, &["--config", config]).await.unwrap();
    let pk = pkh_of(&emu.key("baker").unwrap()).1;
    sign_and_verify(&server, &pk).await;
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn app_service_identity_and_azure_cli_credentials_serve_keys() {
    let emu = emulator().await;
    let pk = pkh_of(&emu.create_key("baker", EmuCurve::P256).unwrap()).1;
    let dir = tempfile::tempdir().unwrap();

    // App Service / Container Apps: the platform sets IDENTITY_ENDPOINT and IDENTITY_HEADER.
    let config = write_config(&emu, dir.path(), "kind = \"managed_identity\"");
    let before = emu.counters().get(Operation::AppServiceToken);
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let server = Server::start_env(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[
            ("IDENTITY_ENDPOINT", &emu.identity_endpoint()),
            ("IDENTITY_HEADER", emu.identity_header()),
        ],
    )
    .await
    .unwrap();
    sign_and_verify(&server, &pk).await;
    assert!(emu.counters().get(Operation::AppServiceToken) > before);
    assert!(server.terminate().await.success());

    // Azure CLI: an `az` on PATH that answers `account get-access-token` with a token it obtained from the
    // emulator's Entra endpoint, in the CLI's JSON shape.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let az = bin.join("az");
    let script = format!(
        r#"#!/usr/bin/env python3
import json, ssl, sys, urllib.parse, urllib.request
args = sys.argv[1:]
assert args[:2] == ["account", "get-access-token"], args
scope = args[args.index("--scope") + 1]
ctx = ssl.create_default_context(cafile={ca:?})
body = urllib.parse.urlencode({{"grant_type": "client_credentials", "client_id": {client:?},
                               "client_secret": {secret:?}, "scope": scope}}).encode()
with urllib.request.urlopen({url:?}, body, context=ctx) as r:
    t = json.load(r)
import time
print(json.dumps({{"accessToken": t["access_token"], "expires_on": int(time.time()) + int(t["expires_in"]),
                  "tenant": {tenant:?}, "tokenType": "Bearer"}}))
"#,
        ca = emu.ca_pem_path().unwrap().display().to_string(),
        client = emu.client_id(),
        secret = emu.client_secret(),
        url = emu.token_url(),
        tenant = emu.tenant_id(),
    );
    std::fs::write(&az, script).unwrap();
    std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = write_config(&emu, dir.path(), "kind = \"azure_cli\"");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    std::fs::create_dir(dir.path().join("data2")).unwrap();
    let server = Server::start_env(
        &dir.path().join("data2"),
        &["--config", config.to_str().unwrap()],
        &[("PATH", &path)],
    )
    .await
    .unwrap();
    sign_and_verify(&server, &pk).await;
    assert!(server.terminate().await.success());
}

/// Runs openssl with `args` and `stdin`; returns stdout.
fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed (.ci/run installs it)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

#[tokio::test]
async fn openssl_generated_pems_import_plain_and_passphrase_encrypted() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for (name, curve, cipher) in [
        ("ossl-p256-aes256", "prime256v1", "-aes256"),
        ("ossl-k1-aes128", "secp256k1", "-aes128"),
        ("ossl-p256-plain", "prime256v1", ""),
    ] {
        // `openssl ecparam -genkey`, as the issue's workflow has it, then (optionally) a passphrase.
        let plain = openssl(&["ecparam", "-genkey", "-name", curve, "-noout"], b"");
        let pem = if cipher.is_empty() {
            plain.clone()
        } else {
            openssl(&["ec", cipher, "-passout", "pass:open sesame"], &plain)
        };
        let pem = String::from_utf8(pem).unwrap();
        assert_eq!(pem.contains("ENCRYPTED"), !cipher.is_empty(), "{pem}");
        // The expected public key, from the unencrypted PEM by an independent parser.
        let plain = String::from_utf8(plain).unwrap();
        let expected = if curve == "secp256k1" {
            let k = k256::SecretKey::from_sec1_pem(&plain).unwrap();
            PublicKey::from_bytes(Curve::Secp256k1, &k.public_key().to_sec1_bytes()).unwrap()
        } else {
            let k = p256::SecretKey::from_sec1_pem(&plain).unwrap();
            PublicKey::from_bytes(Curve::P256, &k.public_key().to_sec1_bytes()).unwrap()
        };
        let env = [("TZKMS_PEM_PASSPHRASE", "open sesame")];
        let (ok, out, err) = run_with(
            &["--config", config, "azure", "keys", "import", "--name", name],
            &data,
            &env,
            Some(&pem),
        )
        .await;
        assert!(ok, "{name}: {err}");
        assert_eq!(out.lines().next().unwrap(), expected.hash().to_string(), "{name}");
        if !cipher.is_empty() {
            let wrong = [("TZKMS_PEM_PASSPHRASE", "wrong")];
            let (ok, _, err) = run_with(
                &["--config", config, "azure", "keys", "import", "--name", "x"],
                &data,
                &wrong,
                Some(&pem),
            )
            .await;
            assert!(!ok, "{name}: imported with a wrong passphrase");
            assert!(err.contains("passphrase"), "{err}");
        }
    }
    let server = Server::start(&data, &["--config", config]).await.unwrap();
    for name in ["ossl-p256-aes256", "ossl-k1-aes128", "ossl-p256-plain"] {
        let pk = pkh_of(&emu.key(name).unwrap()).1;
        sign_and_verify(&server, &pk).await;
    }
    assert!(server.terminate().await.success());
}

/// The versions of a vault key, through the REST API (`GET /keys/{name}/versions`), oldest first (the
/// order `azure keys list` shows them in).
async fn versions_in_vault(emu: &Emulator, name: &str) -> Vec<String> {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap())
        .build()
        .unwrap();
    let page: serde_json::Value = http
        .get(format!(
            "{}/keys/{name}/versions?api-version=2025-07-01",
            emu.url()
        ))
        .bearer_auth(emu.issue_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut items: Vec<(u64, String)> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let kid = item["kid"].as_str().unwrap();
            (
                item["attributes"]["created"].as_u64().unwrap(),
                kid.rsplit('/').next().unwrap().to_owned(),
            )
        })
        .collect();
    // Versions made in the same second keep the vault's order.
    items.sort_by_key(|(created, _)| *created);
    items.into_iter().map(|(_, v)| v).collect()
}

async fn azure_keys(config: &str, data: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut all = vec!["--config", config, "azure", "keys"];
    all.extend_from_slice(args);
    run_with(&all, data, &[], stdin).await
}

#[tokio::test]
async fn creating_or_importing_over_an_existing_key_name_is_refused_and_changes_nothing() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    let create = ["create", "--name", "baker", "--curve", "p256"];
    let (ok, out, err) = azure_keys(config, &data, &create, None).await;
    assert!(ok, "{err}");
    let pkh = out.lines().next().unwrap().to_owned();
    let before = versions_in_vault(&emu, "baker").await;
    assert_eq!(before.len(), 1);

    let (ok, out, err) = azure_keys(config, &data, &create, None).await;
    assert!(!ok, "a second create on the same name succeeded: {out}");
    assert!(
        err.contains(&pkh),
        "the refusal names the existing address: {err}"
    );
    assert!(err.contains("--new-version"), "the refusal names the flag: {err}");
    assert!(err.contains("Nothing was changed"), "{err}");

    let p2sk = SecretKey::generate(Curve::P256).to_b58().to_string();
    let (ok, _, err) = azure_keys(config, &data, &["import", "--name", "baker"], Some(&p2sk)).await;
    assert!(
        !ok && err.contains(&pkh) && err.contains("--new-version"),
        "{err}"
    );

    assert_eq!(
        versions_in_vault(&emu, "baker").await,
        before,
        "the vault is unchanged"
    );
    assert_eq!(pkh_of(&emu.key("baker").unwrap()).0.to_string(), pkh);
}

#[tokio::test]
async fn a_new_version_is_made_only_when_asked_and_both_addresses_stay_served_and_listed() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let config = config.to_str().unwrap();
    let data = dir.path().join("data");
    let (ok, out, err) = azure_keys(
        config,
        &data,
        &["create", "--name", "baker", "--curve", "p256"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let old: tezos::PublicKeyHash = out.lines().next().unwrap().parse().unwrap();
    let old_pk = pkh_of(&emu.key("baker").unwrap()).1;
    let server = Server::start(&data, &["--config", config]).await.unwrap();
    sign_and_verify(&server, &old_pk).await;

    let (ok, out, err) = azure_keys(
        config,
        &data,
        &["create", "--name", "baker", "--curve", "p256", "--new-version"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    let new: tezos::PublicKeyHash = out.lines().next().unwrap().parse().unwrap();
    assert_ne!(new, old);
    assert!(err.contains("NEW ADDRESS"), "{err}");
    assert!(
        err.contains(&new.to_string()) && err.contains(&old.to_string()),
        "{err}"
    );
    assert!(err.contains("consensus key"), "says what to do: {err}");
    assert!(err.contains("keep the old version enabled"), "{err}");
    let versions = versions_in_vault(&emu, "baker").await;
    assert_eq!(versions.len(), 2, "version 2 is made");
    let new_pk = pkh_of(&emu.key("baker").unwrap()).1;
    assert_eq!(new_pk.hash(), new);

    // The running signer finds the new address (one re-read for an unknown address) and keeps the old one.
    sign_and_verify(&server, &new_pk).await;
    sign_and_verify(&server, &old_pk).await;
    let http = reqwest::Client::new();
    for pkh in [old, new] {
        let status = http
            .get(format!("http://{}/keys/{pkh}", server.addr))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "{pkh} is served");
    }
    let log = std::fs::read_to_string(&server.log_path).unwrap();
    let warning = log
        .lines()
        .find(|l| l.contains("new version"))
        .unwrap_or_else(|| panic!("no warning about the new version in the log:\n{log}"));
    assert!(
        warning.contains(&old.to_string()) && warning.contains(&new.to_string()),
        "{warning}"
    );
    assert!(server.terminate().await.success());

    let (ok, out, err) = azure_keys(config, &data, &["list"], None).await;
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "a header row: {out}");
    let rows: Vec<&str> = lines.filter(|l| l.starts_with("baker ")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, (version, pkh)) in rows.iter().zip(versions.iter().zip([old, new])) {
        assert!(
            row.contains(version.as_str()) && row.contains(&pkh.to_string()),
            "{row}"
        );
        assert!(
            row.contains("true") && row.contains("Z "),
            "enabled and created: {row}"
        );
    }
    let (ok, out, err) = azure_keys(config, &data, &["list", "--json"], None).await;
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{out}");
    for (row, (version, pkh)) in listed.iter().zip(versions.iter().zip([old, new])) {
        assert_eq!(row["name"], "baker");
        assert_eq!(row["version"].as_str(), Some(version.as_str()));
        assert_eq!(row["address"].as_str(), Some(pkh.to_string().as_str()));
        assert_eq!(row["enabled"], true);
        assert!(row["created"].as_u64().is_some(), "{row}");
    }
}
