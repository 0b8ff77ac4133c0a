//! `tzkms init` on the real binary: each setup writes a configuration that `config check` accepts and
//! `serve` starts with and signs with; existing files are never overwritten.

use std::path::{Path, PathBuf};

use kv_emulator::{Curve as EmuCurve, Emulator, Flavour};
use tezos::{BlsScheme, Curve, PublicKey, PublicKeyHash, SecretKey, Signature};

use crate::azure::pkh_of;
use crate::helpers::attestation;
use crate::process::{run_with, Server};

/// `tzkms init --config <dir>/tzkms.toml --data-dir <dir>/data <args>`.
async fn init(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let config = dir.join("tzkms.toml");
    let mut all = vec!["--config", config.to_str().unwrap(), "init"];
    all.extend_from_slice(args);
    run_with(&all, &dir.join("data"), &[], stdin).await
}

fn config_of(dir: &Path) -> PathBuf {
    dir.join("tzkms.toml")
}

async fn config_check(dir: &Path) {
    let config = config_of(dir);
    let (ok, out, err) = run_with(
        &["--config", config.to_str().unwrap(), "config", "check"],
        &dir.join("data"),
        &[],
        None,
    )
    .await;
    assert!(
        ok,
        "config check refused the generated configuration:\n{out}\n{err}"
    );
    assert!(out.contains("configuration OK"), "{out}");
}

/// Serves the generated configuration and signs an attestation with `pk`, checking the signature.
async fn serve_and_sign(dir: &Path, pk: &PublicKey) {
    let config = config_of(dir);
    let server = Server::start(&dir.join("data"), &["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let payload = attestation(10, 1);
    let response = reqwest::Client::new()
        .post(format!("http://{}/keys/{}", server.addr, pk.hash()))
        .body(format!("\"{}\"", hex::encode(&payload)))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
    assert!(pk.verify(&payload, &sig, BlsScheme::default()));
    assert!(server.terminate().await.success());
}

/// The first line init prints is the key's address; its public key is asked of `keys show`-like output.
fn public_key_line(out: &str) -> PublicKey {
    out.lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap_or_else(|| panic!("no public key in {out}"))
        .trim()
        .parse()
        .unwrap()
}

fn import_line(out: &str) -> &str {
    out.lines()
        .rev()
        .find(|l| l.starts_with("octez-client import secret key"))
        .unwrap_or_else(|| panic!("no import line in {out}"))
}

#[tokio::test]
async fn init_file_setup_writes_a_commented_config_and_a_key_that_signs() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = init(dir.path(), &["--listen", "192.0.2.10:7732"], None).await;
    assert!(ok, "{err}");
    let pk = public_key_line(&out);
    assert_eq!(pk.curve(), Curve::P256, "P-256 (tz3) by default");
    assert_eq!(
        import_line(&out),
        format!(
            "octez-client import secret key <alias> http://192.0.2.10:7732/{}",
            pk.hash()
        )
    );
    assert!(out.contains("configuration OK"), "init ran the checks: {out}");
    let mode = std::fs::metadata(dir.path().join("data"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let text = std::fs::read_to_string(config_of(dir.path())).unwrap();
    // Every setting has a comment above it or on its section.
    let mut previous = "";
    for line in text.lines() {
        if line.contains(" = ") && !line.starts_with('#') {
            assert!(
                previous.starts_with('#') || previous.contains(" = ") || previous.starts_with('['),
                "no comment for {line:?}:\n{text}"
            );
        }
        previous = line;
    }
    assert!(text.contains("listen = [\"192.0.2.10:7732\"]"), "{text}");
    config_check(dir.path()).await;
    // A key made here is vouched for: it signs consensus at once.
    serve_and_sign(dir.path(), &pk).await;

    // Other curves.
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = init(dir.path(), &["--curve", "ed25519"], None).await;
    assert!(ok, "{err}");
    let pk = public_key_line(&out);
    assert_eq!(pk.curve(), Curve::Ed25519);
    assert!(import_line(&out).contains("http://127.0.0.1:6732/tz1"), "{out}");
}

#[tokio::test]
async fn init_imports_a_key_from_a_file_or_standard_input() {
    let key = SecretKey::generate(Curve::Secp256k1);
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = init(dir.path(), &["--import", "-"], Some(key.to_b58().as_str())).await;
    assert!(ok, "{err}");
    assert_eq!(public_key_line(&out), *key.public_key());
    // Its history is unknown here: init says what it needs before it signs consensus.
    assert!(err.contains("tzkms watermark floor"), "{err}");
    config_check(dir.path()).await;

    let key = SecretKey::generate(Curve::Ed25519);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baker.sk");
    std::fs::write(&file, format!("unencrypted:{}\n", key.to_b58().as_str())).unwrap();
    let (ok, out, err) = init(
        dir.path(),
        &["--import", file.to_str().unwrap(), "--alias", "baker"],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(public_key_line(&out), *key.public_key());
    assert!(dir.path().join("data/keys/baker.key").exists());
    // A bad key is refused and no configuration is left behind.
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = init(dir.path(), &["--import", "-"], Some("edsknope")).await;
    assert!(!ok && err.contains("secret key"), "{err}");
    assert!(!config_of(dir.path()).exists());
    assert!(
        !dir.path().join("data").exists(),
        "left as it was: init can run again"
    );
}

#[tokio::test]
async fn init_refuses_to_overwrite_a_config_or_a_non_empty_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(config_of(dir.path()), "# mine\n").unwrap();
    let (ok, _, err) = init(dir.path(), &[], None).await;
    assert!(!ok);
    let config = config_of(dir.path());
    assert!(
        err.contains(&format!("refusing to overwrite {}", config.display())) && err.contains("--config"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# mine\n");
    assert!(!dir.path().join("data").exists(), "nothing was created");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("watermarks.json"), "{}").unwrap();
    let (ok, _, err) = init(dir.path(), &[], None).await;
    assert!(!ok);
    assert!(
        err.contains(&format!("refusing to initialise {}", data.display())) && err.contains("--data-dir"),
        "{err}"
    );
    assert!(!config_of(dir.path()).exists());
    // An empty directory is fine.
    std::fs::remove_file(data.join("watermarks.json")).unwrap();
    let (ok, _, err) = init(dir.path(), &[], None).await;
    assert!(ok, "{err}");

    // Flags of another setup are errors.
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = init(dir.path(), &["--key-name", "baker"], None).await;
    assert!(!ok && err.contains("--key-name is for a vault"), "{err}");
    let (ok, _, err) = init(dir.path(), &["--backend", "azure-vault", "--key-name", "b"], None).await;
    assert!(!ok && err.contains("needs --vault-url"), "{err}");
}

async fn emulator(flavour: Flavour) -> Emulator {
    crate::azure::emulator_with(kv_emulator::Config {
        flavour,
        ..kv_emulator::Config::tls()
    })
    .await
}

/// The flags pointing init at the emulator with its service principal.
fn azure_flags(emu: &Emulator, dir: &Path, backend: &str) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("azure-secret");
    std::fs::write(&secret, emu.client_secret()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    [
        "--backend",
        backend,
        "--vault-url",
        emu.url(),
        "--credential",
        "client-secret",
        "--tenant-id",
        emu.tenant_id(),
        "--client-id",
        emu.client_id(),
        "--client-secret-file",
        secret.to_str().unwrap(),
        "--authority-host",
        emu.authority_host(),
        "--ca-file",
        emu.ca_pem_path().unwrap().to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn pkh_from_first_line(out: &str) -> PublicKeyHash {
    out.lines().next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn init_azure_vault_uses_an_existing_key_or_creates_one_when_asked() {
    let emu = emulator(Flavour::Vault).await;
    let existing = emu.create_key("existing", EmuCurve::P256).unwrap();
    let (existing_pkh, _) = pkh_of(&existing);

    let dir = tempfile::tempdir().unwrap();
    let mut args = azure_flags(&emu, dir.path(), "azure-vault");
    args.extend(["--key-name", "existing", "--listen", "10.0.0.4:6732"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = init(dir.path(), &args, None).await;
    assert!(ok, "{err}");
    assert_eq!(pkh_from_first_line(&out), existing_pkh);
    assert!(
        import_line(&out).ends_with(&format!("http://10.0.0.4:6732/{existing_pkh}")),
        "{out}"
    );
    let text = std::fs::read_to_string(config_of(dir.path())).unwrap();
    assert!(text.contains("keys = [\"existing\"]"), "{text}");
    assert!(text.contains("price_per_10k_operations = 0.15"), "{text}");
    config_check(dir.path()).await;
    // Served (its past is unknown here, so no consensus signature until a floor: a key read).
    let config = config_of(dir.path());
    let server = Server::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let r = reqwest::get(format!("http://{}/keys/{existing_pkh}", server.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(server.terminate().await.success());

    // A name the vault does not have is refused unless --create-key, which is never implied.
    let dir = tempfile::tempdir().unwrap();
    let mut args = azure_flags(&emu, dir.path(), "azure-vault");
    args.extend(["--key-name", "new-baker"].map(str::to_owned));
    let plain: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = init(dir.path(), &plain, None).await;
    assert!(!ok && err.contains("--create-key"), "{err}");
    assert!(emu.key("new-baker").is_none());
    assert!(!config_of(dir.path()).exists());

    args.extend(["--create-key", "--curve", "secp256k1"].map(str::to_owned));
    let create: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = init(dir.path(), &create, None).await;
    assert!(ok, "{err}");
    let (created, pk) = pkh_of(&emu.key("new-baker").unwrap());
    assert_eq!(pkh_from_first_line(&out), created);
    assert!(created.to_string().starts_with("tz2"));
    config_check(dir.path()).await;
    // Created here, so vouched for: consensus signs at once.
    serve_and_sign(dir.path(), &pk).await;
}

#[tokio::test]
async fn init_managed_hsm_creates_a_key_that_signs() {
    let emu = emulator(Flavour::ManagedHsm).await;
    let dir = tempfile::tempdir().unwrap();
    let mut args = azure_flags(&emu, dir.path(), "managed-hsm");
    args.extend(["--key-name", "baker", "--create-key"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = init(dir.path(), &args, None).await;
    assert!(ok, "{err}");
    let (pkh, pk) = pkh_of(&emu.key("baker").unwrap());
    assert_eq!(pkh_from_first_line(&out), pkh);
    let text = std::fs::read_to_string(config_of(dir.path())).unwrap();
    assert!(
        text.contains("Managed HSM") && text.contains("price_per_10k_operations = 0.0"),
        "{text}"
    );
    config_check(dir.path()).await;
    serve_and_sign(dir.path(), &pk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_with_a_shared_table_writes_a_config_that_signs_through_the_table() {
    let azurite = crate::azurite::Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = crate::table::table_config(&azurite, dir.path());
    let key_file = table.account_key_file.clone().unwrap();
    let (ok, out, err) = init(
        dir.path(),
        &[
            "--shared-table",
            &table.endpoint,
            "--table-name",
            &table.table,
            "--table-account-key-file",
            key_file.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("(writable)"),
        "config check reached the table: {out}"
    );
    let pk = public_key_line(&out);
    config_check(dir.path()).await;
    serve_and_sign(dir.path(), &pk).await;
    azurite.stop().await;
}

#[tokio::test]
async fn the_documented_init_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let lines = crate::operator::documented_commands("configuration.md", "## Starting with `tzkms init`");
    assert!(lines[0].starts_with("tzkms init"), "{lines:?}");
    crate::operator::run_documented(&lines, dir.path()).await;
    let config = tzkms::config::Config::load(&dir.path().join("tzkms.toml")).unwrap();
    assert_eq!(
        config.data_dir(),
        dir.path().join("tzkms-data").canonicalize().unwrap()
    );
}
