//! Key files sealed by a vault key, through the real binary against the Key Vault emulator: `keys generate
//! --seal-with` and `keys import --seal-with` write only the vault's ciphertext; `serve` unseals each file
//! once and signs; sealing on top of a password; and the startup errors of a vault that refuses (missing
//! role, disabled or deleted key) or cannot be reached, with and without RUST_BACKTRACE.

use std::path::PathBuf;

use base64::Engine as _;
use kv_emulator::{Emulator, Operation};
use tezos::{BlsScheme, Curve, PublicKey, PublicKeyHash, SecretKey, Signature};

use crate::azure::emulator;
use crate::azure_cli::{write_config, CLIENT_SECRET};
use crate::process::{run_with, Server};

const SEAL: &str = "seal";

struct Setup {
    emu: Emulator,
    _dir: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
}

async fn setup() -> Setup {
    let emu = emulator().await;
    emu.create_rsa_key(SEAL, 2048, &["wrapKey", "unwrapKey"])
        .expect("sealing key");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    Setup {
        emu,
        _dir: dir,
        config,
        data,
    }
}

impl Setup {
    async fn tzkms(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> (bool, String, String) {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        run_with(&all, &self.data, env, stdin).await
    }

    /// `tzkms keys generate --curve <curve> --alias <alias> --seal-with <SEAL>`.
    async fn generate_sealed(&self, curve: &str, alias: &str) -> (bool, String, String) {
        let args = [
            "keys",
            "generate",
            "--curve",
            curve,
            "--alias",
            alias,
            "--seal-with",
            SEAL,
        ];
        self.tzkms(&args, &[], None).await
    }

    async fn serve(&self, env: &[(&str, &str)]) -> Result<Server, String> {
        Server::start_env(&self.data, &["--config", self.config.to_str().unwrap()], env).await
    }

    fn key_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.data.join("keys").join(format!("{name}.key"))).unwrap()
    }

    fn unwraps(&self) -> u64 {
        self.emu.counters().get(Operation::UnwrapKey)
    }
}

/// The JSON inside a `sealed:` file.
fn sealed_json(text: &str) -> serde_json::Value {
    let body = text.trim().strip_prefix("sealed:").expect("sealed: prefix");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .expect("base64url");
    serde_json::from_slice(&json).expect("JSON")
}

/// No form of the secret is on disk: no base58 secret prefix, no raw bytes, hex or base64 of them.
fn assert_only_ciphertext(text: &str, secret: Option<&SecretKey>) {
    for prefix in ["edsk", "spsk", "p2sk", "BLsk", "esk", "unencrypted"] {
        assert!(!text.contains(prefix), "{prefix} on disk: {text}");
    }
    if let Some(sk) = secret {
        let b58 = sk.to_b58();
        assert!(!text.contains(b58.as_str()));
        let (_, raw) = tezos::base58::decode_any(b58.as_str()).expect("b58");
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let sealed = sealed_json(text);
        let wrapped = engine.decode(sealed["value"].as_str().unwrap()).unwrap();
        for tail in [&raw[raw.len() - 32..], &raw[..]] {
            assert!(!text.contains(&hex::encode(tail)));
            assert!(!text.contains(&engine.encode(tail)));
            assert!(!wrapped.windows(tail.len()).any(|w| w == tail));
        }
    }
}

async fn sign_verified(server: &Server, pkh: &PublicKeyHash, pk: &PublicKey) {
    let payload = b"\x03\x42\x42";
    let (status, body) = server.sign(pkh, "version=3", payload).await;
    assert_eq!(status, 200, "{body}");
    let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
    assert!(pk.verify(payload, &sig, BlsScheme::default()), "{pkh}");
}

async fn public_key_of(s: &Setup, pkh: &str) -> PublicKey {
    let (ok, out, err) = s.tzkms(&["keys", "show", pkh], &[], None).await;
    assert!(ok, "{err}");
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .expect("public key line");
    line.trim().parse().unwrap()
}

#[tokio::test]
async fn sealed_key_files_of_every_curve_hold_only_ciphertext_and_sign_after_one_unwrap_each() {
    let s = setup().await;
    let mut keys = Vec::new();
    for (curve, alias) in [
        ("ed25519", "k1"),
        ("secp256k1", "k2"),
        ("p256", "k3"),
        ("bls", "k4"),
    ] {
        let (ok, out, err) = s.generate_sealed(curve, alias).await;
        assert!(ok, "{curve}: {err}");
        assert!(
            err.contains(&format!("sealed by {}/keys/{SEAL}/", s.emu.url())),
            "{err}"
        );
        let pkh = out.lines().next().unwrap().trim().to_owned();
        let text = s.key_file(alias);
        assert_only_ciphertext(&text, None);
        let json = sealed_json(&text);
        assert_eq!(json["vault"], s.emu.url());
        assert_eq!(json["key"], SEAL);
        assert_eq!(json["alg"], "RSA-OAEP-256");
        assert_eq!(
            json["version"].as_str().unwrap().len(),
            32,
            "the version is pinned"
        );
        keys.push(pkh);
    }
    // A known secret, imported: none of its forms is on disk.
    let known = SecretKey::generate(Curve::Bls);
    let (ok, out, err) = s
        .tzkms(
            &[
                "keys",
                "import",
                "--alias",
                "imported",
                "--seal-with",
                &format!("{}/keys/{SEAL}", s.emu.url()),
            ],
            &[],
            Some(known.to_b58().as_str()),
        )
        .await;
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().next().unwrap().trim(),
        known.public_key().hash().to_string()
    );
    assert_only_ciphertext(&s.key_file("imported"), Some(&known));
    keys.push(known.public_key().hash().to_string());

    let before = s.unwraps();
    let server = s.serve(&[]).await.expect("serves sealed keys");
    assert_eq!(s.unwraps() - before, 5, "one unwrap per sealed file per start");
    for pkh in &keys {
        let pk = public_key_of(&s, pkh).await;
        sign_verified(&server, &pkh.parse().unwrap(), &pk).await;
    }
    // `keys show` unsealed too (5 files each); signing itself never calls the vault.
    let after_shows = s.unwraps();
    let pk = known.public_key().clone();
    sign_verified(&server, &pk.hash(), &pk).await;
    assert_eq!(s.unwraps(), after_shows);
    server.terminate().await;
}

#[tokio::test]
async fn a_sealed_key_on_top_of_a_password_needs_both() {
    let s = setup().await;
    let pw = [("TZKMS_KEY_PASSWORD", "correct horse")];
    let (ok, out, err) = s
        .tzkms(
            &[
                "keys",
                "generate",
                "--curve",
                "p256",
                "--alias",
                "both",
                "--encrypt",
                "--seal-with",
                SEAL,
            ],
            &pw,
            None,
        )
        .await;
    assert!(ok, "{err}");
    let pkh: PublicKeyHash = out.lines().next().unwrap().trim().parse().unwrap();
    assert_only_ciphertext(&s.key_file("both"), None);
    let err = s.serve(&[]).await.err().expect("no password: no start");
    assert!(err.contains("both.key holds an encrypted key"), "{err}");
    assert!(err.contains("TZKMS_KEY_PASSWORD"), "{err}");
    let server = s.serve(&pw).await.expect("starts with the password");
    let (ok, out, _) = s.tzkms(&["keys", "show", &pkh.to_string()], &pw, None).await;
    assert!(ok);
    let pk: PublicKey = out
        .lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sign_verified(&server, &pkh, &pk).await;
    server.terminate().await;
}

async fn start_fails(s: &Setup, needles: &[&str]) {
    for backtrace in ["0", "1"] {
        let err = s
            .serve(&[("RUST_BACKTRACE", backtrace)])
            .await
            .err()
            .expect("startup refused");
        for needle in needles {
            assert!(
                err.contains(needle),
                "RUST_BACKTRACE={backtrace}: no {needle:?} in:\n{err}"
            );
        }
        assert!(!err.contains("BLsk") && !err.contains("edsk"), "{err}");
    }
}

fn kid_prefix(s: &Setup) -> String {
    format!("{}/keys/{SEAL}/", s.emu.url())
}

#[tokio::test]
async fn an_identity_without_the_unwrap_role_fails_startup_naming_file_key_and_role() {
    let s = setup().await;
    let (ok, _, err) = s.generate_sealed("bls", "tz4").await;
    assert!(ok, "{err}");
    s.emu.faults().deny_key_operation(SEAL, Operation::UnwrapKey);
    let file = s.data.join("keys/tz4.key");
    start_fails(
        &s,
        &[
            &file.display().to_string(),
            &kid_prefix(&s),
            &format!("appid={}", s.emu.client_id()),
            "lacks wrap/unwrap on key seal",
            "grant it the 'Key Vault Crypto Service Encryption User' role on that key",
        ],
    )
    .await;
    // Sealing needs the wrap permission: refused before anything is written.
    s.emu.faults().deny_key_operation(SEAL, Operation::WrapKey);
    let (ok, _, err) = s.generate_sealed("p256", "nope").await;
    assert!(!ok);
    assert!(err.contains("Key Vault Crypto Service Encryption User"), "{err}");
    assert!(!s.data.join("keys/nope.key").exists());
    // Granted again, it starts.
    s.emu.faults().allow_key(SEAL);
    s.serve(&[]).await.expect("starts once granted").terminate().await;
}

#[tokio::test]
async fn a_disabled_or_deleted_sealing_key_fails_startup_with_what_to_do() {
    let s = setup().await;
    let (ok, _, err) = s.generate_sealed("ed25519", "k").await;
    assert!(ok, "{err}");
    assert!(s.emu.faults().set_key_enabled(SEAL, false));
    start_fails(&s, &["k.key", &kid_prefix(&s), "is disabled: enable it"]).await;
    assert!(s.emu.faults().set_key_enabled(SEAL, true));

    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(s.emu.ca_pem().unwrap().as_bytes()).unwrap())
        .build()
        .unwrap();
    let deleted = http
        .delete(format!("{}/keys/{SEAL}?api-version=7.5", s.emu.url()))
        .bearer_auth(s.emu.issue_token())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    start_fails(
        &s,
        &["k.key", &kid_prefix(&s), "HTTP 404", "az keyvault key recover"],
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_vault_fails_startup_naming_the_cause() {
    let s = setup().await;
    let (ok, _, err) = s.generate_sealed("p256", "k").await;
    assert!(ok, "{err}");
    let kid = kid_prefix(&s);
    let Setup {
        emu,
        _dir,
        config,
        data,
    } = s;
    // The emulator's CA file goes with it: keep a copy so the failure is the connection, not the CA.
    let ca = emu.ca_pem_path().unwrap().to_owned();
    let kept = data.with_extension("ca.pem");
    std::fs::copy(&ca, &kept).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&ca.display().to_string(), &kept.display().to_string()),
    )
    .unwrap();
    emu.shutdown().await;
    let file = data.join("keys/k.key");
    for backtrace in ["0", "1"] {
        let err = Server::start_env(
            &data,
            &["--config", config.to_str().unwrap()],
            &[("RUST_BACKTRACE", backtrace)],
        )
        .await
        .err()
        .expect("no start without the vault");
        for needle in [
            file.display().to_string().as_str(),
            kid.as_str(),
            "cannot be reached",
            "nothing listens",
            "does not serve without the key",
        ] {
            assert!(
                err.contains(needle),
                "RUST_BACKTRACE={backtrace}: no {needle:?} in:\n{err}"
            );
        }
    }
}

#[tokio::test]
async fn a_managed_hsm_aes_key_seals_with_aes_key_wrap_and_a_refusal_names_the_hsm_role() {
    let emu = crate::azure::emulator_with(kv_emulator::Config {
        flavour: kv_emulator::Flavour::ManagedHsm,
        ..kv_emulator::Config::tls()
    })
    .await;
    emu.create_oct_key(SEAL, 256, &["wrapKey", "unwrapKey"])
        .expect("AES key");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&emu, dir.path(), CLIENT_SECRET);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let s = Setup {
        emu,
        _dir: dir,
        config,
        data,
    };
    let (ok, out, err) = s.generate_sealed("bls", "tz4").await;
    assert!(ok, "{err}");
    let pkh: PublicKeyHash = out.lines().next().unwrap().trim().parse().unwrap();
    let text = s.key_file("tz4");
    assert_only_ciphertext(&text, None);
    assert_eq!(sealed_json(&text)["alg"], "A256KW");
    let server = s.serve(&[]).await.expect("serves the sealed tz4 key");
    let pk = public_key_of(&s, &pkh.to_string()).await;
    sign_verified(&server, &pkh, &pk).await;
    server.terminate().await;
    s.emu.faults().deny_key_operation(SEAL, Operation::UnwrapKey);
    start_fails(
        &s,
        &[
            "tz4.key",
            "managedHsm/keys/unwrap/action",
            "'Managed HSM Crypto Service Encryption User'",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_reload_unseals_new_sealed_files_and_a_refusing_vault_fails_the_reload_and_changes_nothing() {
    let s = setup().await;
    let generate = |alias: &'static str| {
        let s = &s;
        async move {
            let (ok, out, err) = s.generate_sealed("bls", alias).await;
            assert!(ok, "{err}");
            out.lines()
                .next()
                .unwrap()
                .trim()
                .parse::<PublicKeyHash>()
                .unwrap()
        }
    };
    let first = generate("first").await;
    // Generic payloads for both keys, as the reload tests do.
    let config = std::fs::read_to_string(&s.config).unwrap();
    let mut signer = crate::reload::Running::start(&s.data, &s.config, &[]).await;
    let payload = b"\x03\x42\x42";
    assert_eq!(signer.sign(&first, payload).await, 200);
    let second = generate("second").await;
    assert_eq!(
        signer.sign(&second, payload).await,
        404,
        "not served before the reload"
    );
    let before = s.unwraps();
    signer.reload_and_wait("ok", 1).await;
    assert_eq!(
        s.unwraps() - before,
        2,
        "each sealed file unsealed once by the reload"
    );
    assert_eq!(signer.sign(&second, payload).await, 200);
    // The vault now refuses: the reload fails, says why, and both keys keep signing.
    s.emu.faults().deny_key_operation(SEAL, Operation::UnwrapKey);
    signer.reload_and_wait("failed", 1).await;
    assert!(
        signer.log().contains("Key Vault Crypto Service Encryption User"),
        "{}",
        signer.log()
    );
    assert_eq!(signer.sign(&first, payload).await, 200);
    assert_eq!(signer.sign(&second, payload).await, 200);
    assert_eq!(std::fs::read_to_string(&s.config).unwrap(), config);
    signer.server.terminate().await;
}
