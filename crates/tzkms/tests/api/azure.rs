//! The Azure backend against the Key Vault emulator over HTTPS: signing with tz2/tz3 vault keys, one Key
//! Vault call per signature, high-S normalisation (and the release check behind it), token expiry,
//! throttling, 5xx, stalls and dropped connections inside and beyond the budget, skipped keys, paging,
//! discovery of new keys, credentials.

use std::path::Path;
use std::time::Duration;

use kv_emulator::{Curve as KvCurveEmu, Emulator, Operation};
use tezos::{BlsScheme, PublicKey, PublicKeyHash, Signature};
use tzkms::config::{AzureConfig, CredentialConfig, CredentialKind};

use crate::helpers::{assert_octez_error, attestation, TestSigner};

pub(crate) async fn emulator() -> Emulator {
    Emulator::start(kv_emulator::Config {
        tls: true,
        ..Default::default()
    })
    .await
    .expect("emulator starts")
}

/// An [azure] section using the emulator's service principal (secret in a 0600 file under `dir`).
pub(crate) fn azure_config(emu: &Emulator, dir: &Path) -> AzureConfig {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("azure-secret");
    std::fs::write(&secret, emu.client_secret()).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    AzureConfig {
        ca_file: emu.ca_pem_path().map(Path::to_owned),
        credential: CredentialConfig {
            kind: CredentialKind::ClientSecret,
            tenant_id: Some(emu.tenant_id().to_owned()),
            client_id: Some(emu.client_id().to_owned()),
            client_secret_file: Some(secret),
            authority_host: Some(emu.authority_host().to_owned()),
            ..Default::default()
        },
        ..AzureConfig::new(emu.url())
    }
}

pub(crate) fn pkh_of(info: &kv_emulator::KeyInfo) -> (PublicKeyHash, PublicKey) {
    let curve = match info.curve {
        KvCurveEmu::P256 => tezos::Curve::P256,
        _ => tezos::Curve::Secp256k1,
    };
    let pk = PublicKey::from_bytes(curve, &info.public_key_compressed()).unwrap();
    (pk.hash(), pk)
}

async fn start(emu: &Emulator, tweak: impl FnOnce(&mut AzureConfig)) -> (TestSigner, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut azure = azure_config(emu, dir.path());
    tweak(&mut azure);
    let signer = TestSigner::start_with(&[], |c| {
        c.azure = Some(azure);
        crate::helpers::allow_generic_unchecked(c);
        // These tests sign many generic payloads quickly; the rate limits have tests of their own.
        c.limits.generic_per_key = None;
        c.limits.per_client = None;
    })
    .await;
    (signer, dir)
}

async fn sign_ok(signer: &TestSigner, pkh: &PublicKeyHash, pk: &PublicKey, payload: &[u8]) -> Signature {
    let (status, body) = signer.sign(pkh, "?version=3", payload).await;
    assert_eq!(status, 200, "{body}");
    let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
    assert!(
        pk.verify(payload, &sig, BlsScheme::default()),
        "signature does not verify"
    );
    sig
}

fn is_low_s(sig: &Signature) -> bool {
    match sig {
        Signature::Secp256k1(b) => k256::ecdsa::Signature::from_slice(b)
            .unwrap()
            .normalize_s()
            .is_none(),
        Signature::P256(b) => p256::ecdsa::Signature::from_slice(b)
            .unwrap()
            .normalize_s()
            .is_none(),
        _ => true,
    }
}

fn data_plane_calls(emu: &Emulator) -> u64 {
    emu.counters()
        .snapshot()
        .iter()
        .filter(|(op, _)| op.is_data_plane() || op.is_identity())
        .map(|(_, s)| s.received)
        .sum()
}

#[tokio::test]
async fn vault_keys_sign_as_tz2_and_tz3_with_exactly_one_key_vault_call_each() {
    let emu = emulator().await;
    let tz3 = pkh_of(&emu.create_key("baker-p256", KvCurveEmu::P256).unwrap());
    let tz2 = pkh_of(&emu.create_key("baker-k1", KvCurveEmu::P256K).unwrap());
    let (signer, _dir) = start(&emu, |_| {}).await;
    for (pkh, pk) in [&tz3, &tz2] {
        let (status, body) = signer.get(&format!("/keys/{pkh}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["public_key"], pk.to_string());
    }
    assert!(tz3.0.to_string().starts_with("tz3") && tz2.0.to_string().starts_with("tz2"));
    emu.counters().reset();
    let n = 25;
    for level in 1..=n {
        for (pkh, pk) in [&tz3, &tz2] {
            let sig = sign_ok(&signer, pkh, pk, &attestation(level, 0x22)).await;
            assert!(is_low_s(&sig));
            sign_ok(&signer, pkh, pk, b"\x03\x00\x01").await;
        }
    }
    let signatures = u64::from(n) * 4;
    assert_eq!(emu.counters().get(Operation::Sign), signatures);
    assert_eq!(
        data_plane_calls(&emu),
        signatures,
        "{:?}",
        emu.counters().snapshot()
    );
    // An identical consensus replay is answered from the watermark: no Key Vault call.
    sign_ok(&signer, &tz3.0, &tz3.1, &attestation(n, 0x22)).await;
    assert_eq!(emu.counters().get(Operation::Sign), signatures);
    signer.stop().await;
}

/// The vault's own answer for `name`'s latest version over `digest`, through the REST API.
async fn vault_signature(emu: &Emulator, name: &str, alg: &str, digest: &[u8; 32]) -> [u8; 64] {
    use tzkms::azure::keyvault::{b64url, b64url_decode};
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(emu.ca_pem().unwrap().as_bytes()).unwrap())
        .build()
        .unwrap();
    let version = emu.key(name).unwrap().version;
    let answer: serde_json::Value = http
        .post(format!(
            "{}/keys/{name}/{version}/sign?api-version=2025-07-01",
            emu.url()
        ))
        .bearer_auth(emu.issue_token())
        .json(&serde_json::json!({ "alg": alg, "value": b64url(digest) }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    b64url_decode(answer["value"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn high_s_signatures_from_the_vault_are_normalised() {
    let emu = emulator().await;
    let tz2 = pkh_of(&emu.create_key("k1", KvCurveEmu::P256K).unwrap());
    let tz3 = pkh_of(&emu.create_key("p256", KvCurveEmu::P256).unwrap());
    emu.faults().force_high_s(true);
    // The fault works: the P-256K key's own answer is high S, valid for the vault, refused by the chain's rule.
    let payload = attestation(7, 0x41);
    let digest = tezos::blake2b_256(&payload);
    let raw = vault_signature(&emu, "k1", "ES256K", &digest).await;
    let vault_sig = k256::ecdsa::Signature::from_slice(&raw).unwrap();
    assert!(vault_sig.normalize_s().is_some(), "the vault answered high S");
    assert!(emu.verify("k1", None, &digest, &raw));
    assert!(!tz2
        .1
        .verify(&payload, &Signature::Secp256k1(raw), BlsScheme::default()));

    let (signer, _dir) = start(&emu, |_| {}).await;
    // A consensus payload (through the watermark) and generic ones: only low-S signatures that verify leave.
    let sig = sign_ok(&signer, &tz2.0, &tz2.1, &payload).await;
    assert!(is_low_s(&sig), "{sig}");
    for i in 0..10u8 {
        for (pkh, pk) in [&tz2, &tz3] {
            let sig = sign_ok(&signer, pkh, pk, &[0x03, i]).await;
            assert!(is_low_s(&sig), "{sig}");
        }
    }
    signer.stop().await;
}

/// A backend that forgets to normalise: the file key's low-S secp256k1 signature is handed back with the
/// other half of S, still a valid ECDSA signature (as a vault may answer) but not one the chain accepts.
#[derive(Debug)]
struct SkipsNormalisation(tzkms::backend::file::FileBackend);

impl tzkms::backend::KeyBackend for SkipsNormalisation {
    fn kind(&self) -> &'static str {
        "skips-normalisation"
    }
    fn keys(&self) -> Vec<tzkms::backend::KeyInfo> {
        self.0.keys()
    }
    fn sign<'a>(
        &'a self,
        pkh: &'a PublicKeyHash,
        message: &'a [u8],
        scheme: BlsScheme,
    ) -> tzkms::backend::BoxFuture<'a, Result<Signature, tzkms::backend::BackendError>> {
        Box::pin(async move {
            let low = self.0.sign(pkh, message, scheme).await?;
            let sig = k256::ecdsa::Signature::from_slice(low.as_bytes()).unwrap();
            let (r, s) = sig.split_scalars();
            let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
            Ok(Signature::Secp256k1(high.to_bytes().into()))
        })
    }
}

#[tokio::test]
async fn a_high_s_signature_that_skipped_normalisation_is_refused_by_the_release_check() {
    let key = tezos::SecretKey::generate(tezos::Curve::Secp256k1);
    let pkh = key.public_key().hash();
    let signer = TestSigner::start_with_backend(std::slice::from_ref(&key), |files| {
        std::sync::Arc::new(SkipsNormalisation(files))
    })
    .await;
    for payload in [attestation(5, 0x51), attestation(6, 0x52)] {
        let (status, body) = signer.sign(&pkh, "?version=3", &payload).await;
        assert_eq!(status, 500, "{body}");
        assert_octez_error(&body, "does not verify");
        assert!(body.get("signature").is_none(), "nothing released: {body}");
    }
    assert!(
        signer.watermark_marks().await.is_empty(),
        "a refused signature commits no mark"
    );
    signer.stop().await;
}

#[tokio::test]
async fn revoked_tokens_are_refreshed_once_without_a_failed_signature() {
    let emu = emulator().await;
    let key = pkh_of(&emu.create_key("k", KvCurveEmu::P256).unwrap());
    let (signer, _dir) = start(&emu, |_| {}).await;
    let tokens_before = emu.counters().get(Operation::EntraToken);
    emu.faults().expire_issued_tokens();
    sign_ok(&signer, &key.0, &key.1, b"\x03\x01").await;
    assert_eq!(emu.counters().get(Operation::EntraToken), tokens_before + 1);
    sign_ok(&signer, &key.0, &key.1, b"\x03\x02").await;
    assert_eq!(emu.counters().get(Operation::EntraToken), tokens_before + 1);
    signer.stop().await;
}

#[tokio::test]
async fn short_lived_tokens_are_renewed_in_the_background() {
    let emu = Emulator::start(kv_emulator::Config {
        tls: true,
        token_lifetime: Duration::from_secs(4),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = pkh_of(&emu.create_key("k", KvCurveEmu::P256).unwrap());
    let (signer, _dir) = start(&emu, |_| {}).await;
    let first = emu.counters().get(Operation::EntraToken);
    // Sign across several token lifetimes; no request may fail or wait for a 401 round trip.
    let mut i = 0u32;
    while emu.counters().get(Operation::EntraToken) < first + 3 {
        i += 1;
        sign_ok(&signer, &key.0, &key.1, &[0x03, (i % 256) as u8, (i / 256) as u8]).await;
        assert!(i < 100_000, "the token was never renewed");
        tokio::time::sleep(Duration::from_millis(20)).await; // pacing of a baker, not synchronisation
    }
    assert_eq!(
        emu.counters().failed(Operation::Sign),
        0,
        "a signature met an expired token"
    );
    let tokens = emu.counters().get(Operation::EntraToken) - first;
    assert!(
        u64::from(i) > 10 * tokens,
        "{tokens} tokens for {i} signatures: fetched on the signing path"
    );
    signer.stop().await;
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_inside_the_budget() {
    let emu = emulator().await;
    let key = pkh_of(&emu.create_key("k", KvCurveEmu::P256K).unwrap());
    let (signer, _dir) = start(&emu, |_| {}).await;
    let f = emu.faults();
    let c = emu.counters();

    c.reset();
    f.throttle_next(Operation::Sign, 1, Some(Duration::from_secs(1)));
    sign_ok(&signer, &key.0, &key.1, b"\x03\x01").await;
    assert_eq!(
        c.get(Operation::Sign),
        2,
        "429 with Retry-After 1 s fits a 1.5 s budget"
    );

    c.reset();
    f.fail_next(Operation::Sign, 2, 503);
    sign_ok(&signer, &key.0, &key.1, b"\x03\x02").await;
    assert_eq!(c.get(Operation::Sign), 3);

    c.reset();
    f.drop_next(Operation::Sign, 1);
    sign_ok(&signer, &key.0, &key.1, b"\x03\x03").await;
    assert_eq!(c.get(Operation::Sign), 2);

    c.reset();
    f.stall_next(Operation::Sign, 1, Duration::from_secs(30));
    sign_ok(&signer, &key.0, &key.1, b"\x03\x04").await;
    assert_eq!(
        c.get(Operation::Sign),
        2,
        "a stalled attempt is abandoned and retried"
    );
    f.reset();
    signer.stop().await;
}

#[tokio::test]
async fn failures_beyond_the_budget_are_clear_errors() {
    let emu = emulator().await;
    let key = pkh_of(&emu.create_key("k", KvCurveEmu::P256).unwrap());
    let (signer, _dir) = start(&emu, |_| {}).await;
    let f = emu.faults();

    emu.counters().reset();
    f.throttle_next(Operation::Sign, 1, Some(Duration::from_secs(10)));
    let (status, body) = signer.sign(&key.0, "", b"\x03\x01").await;
    assert_eq!(status, 500);
    assert_octez_error(
        &body,
        "throttled (429, Retry-After 10s) and the wait does not fit the remaining budget",
    );
    assert_eq!(
        emu.counters().get(Operation::Sign),
        1,
        "must not wait past the budget"
    );

    f.fail_next(Operation::Sign, 1000, 500);
    let (status, body) = signer.sign(&key.0, "", b"\x03\x02").await;
    assert_eq!(status, 500);
    assert_octez_error(&body, "no answer within the budget of 1.5s (HTTP 500");
    f.reset();

    f.deny_key_operation("k", Operation::Sign);
    let (status, body) = signer.sign(&key.0, "", b"\x03\x03").await;
    assert_eq!(status, 500);
    assert_octez_error(&body, "HTTP 403");
    f.reset();
    sign_ok(&signer, &key.0, &key.1, b"\x03\x04").await;
    signer.stop().await;
}

#[tokio::test]
async fn unusable_keys_are_skipped_and_new_keys_are_found_on_demand() {
    let emu = emulator().await;
    let good = pkh_of(&emu.create_key("good", KvCurveEmu::P256).unwrap());
    let disabled = pkh_of(&emu.create_key("disabled", KvCurveEmu::P256).unwrap());
    let denied = pkh_of(&emu.create_key("denied", KvCurveEmu::P256K).unwrap());
    emu.faults().set_key_enabled("disabled", false);
    emu.faults().deny_key("denied");
    let (signer, _dir) = start(&emu, |_| {}).await;
    sign_ok(&signer, &good.0, &good.1, b"\x03\x01").await;
    // A key created after start is found on its first request (one re-list) …
    let later = pkh_of(&emu.create_key("later", KvCurveEmu::P256K).unwrap());
    let lists = emu.counters().get(Operation::ListKeys);
    sign_ok(&signer, &later.0, &later.1, b"\x03\x02").await;
    assert_eq!(emu.counters().get(Operation::ListKeys), lists + 1);
    // Disabled and inaccessible keys are not served.
    for skipped in [&disabled, &denied] {
        let (status, _) = signer.get(&format!("/keys/{}", skipped.0)).await;
        assert_eq!(status, 404);
    }
    // … and a stream of unknown addresses does not re-list the vault again.
    for _ in 0..20 {
        let (status, _) = signer.get("/keys/tz2BFTyPeYRzxd5aiBchbXN3WCZhx7BqbMBq").await;
        assert_eq!(status, 404);
    }
    assert_eq!(emu.counters().get(Operation::ListKeys), lists + 1);
    signer.stop().await;
}

#[tokio::test]
async fn every_page_of_keys_is_read_and_pinned_versions_are_honoured() {
    let emu = emulator().await;
    let mut all = Vec::new();
    for i in 0..30 {
        all.push(pkh_of(
            &emu.create_key(&format!("key-{i:02}"), KvCurveEmu::P256).unwrap(),
        ));
    }
    let (signer, _dir) = start(&emu, |_| {}).await;
    assert!(
        emu.counters().get(Operation::ListKeys) >= 2,
        "30 keys need two pages of 25"
    );
    for (pkh, pk) in &all {
        sign_ok(&signer, pkh, pk, b"\x03\x05").await;
    }
    signer.stop().await;

    // Pinning: a newer version of key-00 exists, but the config names the old one.
    let old = emu.key("key-00").unwrap();
    let newer = pkh_of(&emu.create_key("key-00", KvCurveEmu::P256).unwrap());
    let pin = format!("key-00/{}", old.version);
    let (signer, _dir) = start(&emu, |a| a.keys = vec![pin]).await;
    sign_ok(&signer, &all[0].0, &all[0].1, b"\x03\x06").await;
    let (status, _) = signer.get(&format!("/keys/{}", newer.0)).await;
    assert_eq!(status, 404, "only the pinned version is served");
    signer.stop().await;
}

async fn serves_with(emu: &Emulator, tweak: impl FnOnce(&mut AzureConfig)) {
    let key = pkh_of(
        &emu.create_key(&format!("k{}", rand_name()), KvCurveEmu::P256)
            .unwrap(),
    );
    let (signer, _dir) = start(emu, tweak).await;
    sign_ok(&signer, &key.0, &key.1, b"\x03\x07").await;
    signer.stop().await;
}

fn rand_name() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[tokio::test]
async fn workload_identity_and_imds_managed_identity_get_tokens() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let federated = dir.path().join("federated-token");
    // A projected service-account token is a JWT; the emulator accepts any well-formed one.
    std::fs::write(&federated, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0emttcyJ9.c2ln").unwrap();
    let before = emu.counters().get(Operation::EntraToken);
    serves_with(&emu, |a| {
        a.credential = CredentialConfig {
            kind: CredentialKind::WorkloadIdentity,
            tenant_id: Some(emu.tenant_id().into()),
            client_id: Some(emu.client_id().into()),
            federated_token_file: Some(federated.clone()),
            authority_host: Some(emu.authority_host().into()),
            ..Default::default()
        }
    })
    .await;
    assert!(emu.counters().get(Operation::EntraToken) > before);

    let before = emu.counters().get(Operation::ImdsToken);
    serves_with(&emu, |a| {
        a.credential = CredentialConfig {
            kind: CredentialKind::ManagedIdentity,
            imds_endpoint: Some(emu.imds_authority().into()),
            ..Default::default()
        }
    })
    .await;
    assert!(emu.counters().get(Operation::ImdsToken) > before);
}

#[tokio::test]
async fn a_wrong_secret_fails_startup_with_the_entra_error() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut azure = azure_config(&emu, dir.path());
    std::fs::write(azure.credential.client_secret_file.as_ref().unwrap(), "wrong").unwrap();
    azure.keys = vec![];
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let mut config = tzkms::config::Config {
        data_dir: Some(dir.path().join("data")),
        azure: Some(azure),
        ..Default::default()
    };
    config.keys.generate_if_empty = false;
    let err = tzkms::app::Application::build(&config).await.unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("client secret") && text.contains("HTTP 401"),
        "{text}"
    );
}

/// The addresses an Azure backend serves, sorted.
fn served(backend: &tzkms::backend::azure::AzureBackend) -> Vec<PublicKeyHash> {
    use tzkms::backend::KeyBackend as _;
    let mut all: Vec<PublicKeyHash> = backend.keys().iter().map(|k| k.public_key.hash()).collect();
    all.sort();
    all
}

#[tokio::test]
async fn a_rotated_key_serves_every_enabled_version_until_the_old_one_is_disabled() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let v1 = emu.create_key("baker", KvCurveEmu::P256).unwrap();
    let old = pkh_of(&v1).0;
    let client = tzkms::azure::connect(&azure_config(&emu, dir.path()))
        .await
        .unwrap();
    let backend = tzkms::backend::azure::AzureBackend::start(client.clone(), vec![], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(served(&backend), vec![old]);

    let new = pkh_of(&emu.create_key("baker", KvCurveEmu::P256).unwrap()).0;
    assert_eq!(backend.reload().await.unwrap(), 2);
    let mut both = vec![old, new];
    both.sort();
    assert_eq!(
        served(&backend),
        both,
        "the old address stays served after a rotation"
    );

    // A vault that cannot be asked (an error the client does not retry) leaves the served set alone.
    emu.faults().fail_next(Operation::ListKeyVersions, 1, 400);
    backend.reload().await.unwrap();
    assert_eq!(served(&backend), both);

    // A role that may not list versions: the latest version and the versions served so far.
    emu.faults()
        .deny_key_operation("baker", Operation::ListKeyVersions);
    backend.reload().await.unwrap();
    assert_eq!(served(&backend), both);
    emu.faults().allow_key("baker");

    // The operator disables the old version once the new consensus key is active: it stops being served.
    client
        .set_enabled("baker", &v1.version, false, Duration::from_secs(5))
        .await
        .unwrap();
    backend.reload().await.unwrap();
    assert_eq!(served(&backend), vec![new]);
}
