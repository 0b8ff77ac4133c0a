//! Threshold BLS end to end: real `tzkms` cosigners and coordinators on loopback, each with its own data
//! directory, talking mTLS with certificates made here (rcgen); shares made by `tezos::threshold::split`
//! and imported with `tzkms threshold import`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::Value;
use tezos::builder::ConsensusPayload;
use tezos::threshold::{self, ShareId};
use tezos::{BlsScheme, Curve, PublicKey, PublicKeyHash, SecretKey, Signature};

use crate::helpers::{assert_octez_error, block};
use crate::process::{run, Server};

/// A tz4 preattestation (0x12, tag 40, no slot) on mainnet.
fn preattestation(level: u32, round: u32, variant: u8) -> Vec<u8> {
    ConsensusPayload::new(40, level, round)
        .payload_hash([variant; 32])
        .bytes()
}

/// A tz4 attestation (0x13, tag 41, no slot) on mainnet.
fn attestation(level: u32, variant: u8) -> Vec<u8> {
    ConsensusPayload::new(41, level, 0)
        .payload_hash([variant; 32])
        .bytes()
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "threshold test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// Writes `<name>.pem` and `<name>.key` (0600) into `dir`.
    fn issue(&self, dir: &Path, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let names = if server {
            vec!["127.0.0.1".to_owned()]
        } else {
            vec![]
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (
            write(dir, &format!("{name}.pem"), &cert.pem()),
            write(dir, &format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Separate data directories and certificates for N cosigners and any number of coordinators.
struct Cluster {
    root: tempfile::TempDir,
    group: PublicKey,
    threshold: u8,
    /// Share id → share public key.
    share_keys: BTreeMap<u8, PublicKey>,
    /// Share id → https port (fixed, so a restarted cosigner is found at the same URL).
    ports: BTreeMap<u8, u16>,
    cosigners: BTreeMap<u8, Server>,
    ca_pem: PathBuf,
}

impl Cluster {
    async fn new(shares: u8, m: u8) -> Self {
        let root = tempfile::tempdir().unwrap();
        let ca = Ca::new();
        let ca_pem = write(root.path(), "ca.pem", &ca.cert.pem());
        ca.issue(root.path(), "cosigner", true);
        ca.issue(root.path(), "coordinator", false);
        ca.issue(root.path(), "stranger", false);
        let sk = SecretKey::generate(Curve::Bls);
        let set = threshold::split(&sk, shares, m).unwrap();
        let json = write(root.path(), "split.json", &serde_json::to_string(&set).unwrap());
        let group = set.public_key().clone();
        let share_keys: BTreeMap<u8, PublicKey> = set
            .share_public_keys()
            .into_iter()
            .map(|(id, pk)| (id.get(), pk))
            .collect();
        let mut cluster = Self {
            root,
            group,
            threshold: m,
            share_keys,
            ports: BTreeMap::new(),
            cosigners: BTreeMap::new(),
            ca_pem,
        };
        for id in 1..=shares {
            let dir = cluster.dir(&format!("cosigner{id}"));
            let (ok, out, err) = run(
                &[
                    "threshold",
                    "import",
                    json.to_str().unwrap(),
                    "--id",
                    &id.to_string(),
                ],
                &dir,
            )
            .await;
            assert!(ok, "{out}{err}");
            assert!(
                out.contains(&format!("share {id} of {shares}, threshold {m}")),
                "{out}"
            );
            cluster.floor(&dir).await;
            cluster.ports.insert(id, free_port());
            cluster.write_cosigner_config(id, "cn:coordinator");
            cluster.start_cosigner(id).await;
        }
        cluster
    }

    fn pkh(&self) -> PublicKeyHash {
        self.group.hash()
    }

    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        dir
    }

    fn file(&self, name: &str) -> String {
        self.root.path().join(name).to_str().unwrap().to_owned()
    }

    /// An open floor: the group key signed nothing before this test.
    async fn floor(&self, dir: &Path) {
        let (ok, out, err) = run(
            &["watermark", "floor", &self.pkh().to_string(), "--level", "1"],
            dir,
        )
        .await;
        assert!(ok, "{out}{err}");
    }

    fn write_cosigner_config(&self, id: u8, tls_client: &str) {
        let config = format!(
            "[keys]\ngenerate_if_empty = false\n\
             [server.tls]\nlisten = [\"127.0.0.1:{port}\"]\ncertificate = \"{cert}\"\nprivate_key = \"{key}\"\n\
             client_ca = \"{ca}\"\n\
             [policy.keys.{pkh}]\nallow = [\"block\", \"preattestation\", \"attestation\"]\n\
             tls_clients = [\"{tls_client}\"]\n",
            port = self.ports[&id],
            cert = self.file("cosigner.pem"),
            key = self.file("cosigner.key"),
            ca = self.ca_pem.display(),
            pkh = self.pkh(),
        );
        write(self.root.path(), &format!("cosigner{id}.toml"), &config);
    }

    async fn start_cosigner(&mut self, id: u8) {
        let dir = self.dir(&format!("cosigner{id}"));
        let config = self.file(&format!("cosigner{id}.toml"));
        let server = Server::start(&dir, &["--config", &config]).await.unwrap();
        self.cosigners.insert(id, server);
    }

    async fn kill(&mut self, id: u8) {
        self.cosigners.remove(&id).unwrap().kill9().await;
    }

    /// A coordinator's configuration for the cosigners `ids` (others named by `extra` lines).
    fn coordinator_config(&self, ids: &[u8], extra_cosigners: &str) -> String {
        let mut config = format!(
            "[keys]\ngenerate_if_empty = false\n\
             [threshold.client]\ncertificate = \"{cert}\"\nprivate_key = \"{key}\"\nserver_ca = \"{ca}\"\n\
             [[threshold.groups]]\npublic_key = \"{group}\"\nthreshold = {m}\nshares = {n}\ndeadline_ms = 1500\n",
            cert = self.file("coordinator.pem"),
            key = self.file("coordinator.key"),
            ca = self.ca_pem.display(),
            group = self.group,
            m = self.threshold,
            n = self.share_keys.len(),
        );
        for id in ids {
            config.push_str(&format!(
                "[[threshold.groups.cosigners]]\nid = {id}\nurl = \"https://127.0.0.1:{}\"\nshare_public_key = \"{}\"\n",
                self.ports[id], self.share_keys[id]
            ));
        }
        config.push_str(extra_cosigners);
        config
    }

    /// Starts a coordinator with a fresh data directory `name` for every cosigner.
    async fn coordinator(&self, name: &str) -> Server {
        let ids: Vec<u8> = self.share_keys.keys().copied().collect();
        self.coordinator_with(name, &self.coordinator_config(&ids, ""))
            .await
            .unwrap()
    }

    async fn coordinator_with(&self, name: &str, config: &str) -> Result<Server, String> {
        let dir = self.dir(name);
        self.floor(&dir).await;
        let path = write(self.root.path(), &format!("{name}.toml"), config);
        Server::start(&dir, &["--config", path.to_str().unwrap()]).await
    }

    /// An HTTPS client presenting the certificate `name` (the rogue coordinator is the test itself).
    fn client(&self, name: Option<&str>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca_pem).unwrap()).unwrap();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca);
        if let Some(name) = name {
            let mut pem = std::fs::read(self.root.path().join(format!("{name}.pem"))).unwrap();
            pem.extend(std::fs::read(self.root.path().join(format!("{name}.key"))).unwrap());
            builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        builder.build().unwrap()
    }

    /// Asks cosigner `id` directly for its partial signature: (status, body).
    async fn cosign(
        &self,
        client: &reqwest::Client,
        id: u8,
        version: u8,
        payload: &[u8],
    ) -> Result<(u16, Value), String> {
        let url = format!(
            "https://127.0.0.1:{}/cosign/{}?version={version}",
            self.ports[&id],
            self.pkh()
        );
        let response = client
            .post(url)
            .json(&hex::encode(payload))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// A valid partial signature of share `id` over `payload`, from a cosigner's answer.
    fn partial(&self, id: u8, payload: &[u8], scheme: BlsScheme, body: &Value) -> Signature {
        assert_eq!(body["share_id"], id, "{body}");
        let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
        assert!(
            threshold::verify_partial(&self.share_keys[&id], &self.group, payload, scheme, &sig),
            "share {id}'s partial does not verify"
        );
        sig
    }
}

/// Signs through a coordinator's plain HTTP listener: (status, body).
async fn sign(server: &Server, pkh: &PublicKeyHash, version: u8, payload: &[u8]) -> (u16, Value) {
    server.sign(pkh, &format!("version={version}"), payload).await
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn scheme(version: u8) -> BlsScheme {
    if version == 1 {
        BlsScheme::Augmented
    } else {
        BlsScheme::ProofOfPossession
    }
}

/// Signs and checks the signature under the group key; returns it.
async fn sign_ok(cluster: &Cluster, server: &Server, version: u8, payload: &[u8]) -> Signature {
    let (status, body) = sign(server, &cluster.pkh(), version, payload).await;
    assert_eq!(status, 200, "{body}");
    let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
    assert!(
        cluster.group.verify(payload, &sig, scheme(version)),
        "the combined signature does not verify under the group key (version {version})"
    );
    sig
}

#[tokio::test]
async fn threshold_keys_2_of_3_and_3_of_5_sign_every_consensus_kind_under_the_group_key() {
    for (n, m) in [(3u8, 2u8), (5, 3)] {
        let cluster = Cluster::new(n, m).await;
        let coordinator = cluster.coordinator("coordinator").await;
        let (status, body) = get_json(&format!("http://{}/keys/{}", coordinator.addr, cluster.pkh())).await;
        assert_eq!(
            (status, body["public_key"].as_str()),
            (200, Some(cluster.group.to_string().as_str()))
        );
        let mut level = 100;
        for version in [1u8, 2, 3] {
            level += 1;
            for payload in [
                preattestation(level, 0, 1),
                attestation(level, 1),
                block(level, 0, 1),
            ] {
                let sig = sign_ok(&cluster, &coordinator, version, &payload).await;
                // Identical bytes: the identical signature (BLS is deterministic; the marks replay it).
                let again = sign_ok(&cluster, &coordinator, version, &payload).await;
                assert_eq!(sig, again, "{n}-of-{m} version {version}");
                record_for_py_ecc(&cluster.group, version, &payload, &sig);
            }
        }
    }
}

/// Appends (group key, version, payload, signature) to `$TZKMS_THRESHOLD_VECTORS_OUT`, if set, for the
/// independent check with py_ecc (tests/e2e/signer).
fn record_for_py_ecc(group: &PublicKey, version: u8, payload: &[u8], sig: &Signature) {
    let Some(path) = std::env::var_os("TZKMS_THRESHOLD_VECTORS_OUT") else {
        return;
    };
    use std::io::Write;
    let line = serde_json::json!({
        "public_key": group.to_string(),
        "version": version,
        "payload": hex::encode(payload),
        "signature": sig.to_string(),
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

#[tokio::test]
async fn one_cosigner_down_still_signs_and_a_majority_down_is_refused_naming_each_cosigner() {
    let mut cluster = Cluster::new(3, 2).await;
    // Cosigner 3's URL is a socket that accepts connections and never answers: only the deadline ends it.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_port = black_hole.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            open.push(stream);
        }
    });
    let extra = format!(
        "[[threshold.groups.cosigners]]\nid = 3\nurl = \"https://127.0.0.1:{hole_port}\"\nshare_public_key = \"{}\"\n",
        cluster.share_keys[&3]
    );
    let config = cluster.coordinator_config(&[1, 2], &extra);
    let coordinator = cluster.coordinator_with("coordinator", &config).await.unwrap();
    sign_ok(&cluster, &coordinator, 2, &attestation(10, 1)).await;
    cluster.kill(2).await;
    let (status, body) = sign(&coordinator, &cluster.pkh(), 2, &attestation(11, 1)).await;
    assert_eq!(status, 500, "{body}");
    assert_octez_error(&body, "1 of the 2 partial signatures needed (2-of-3)");
    assert_octez_error(
        &body,
        &format!(
            "cosigner 2 at https://127.0.0.1:{}: unreachable",
            cluster.ports[&2]
        ),
    );
    assert_octez_error(
        &body,
        &format!("cosigner 3 at https://127.0.0.1:{hole_port}: no answer within"),
    );
    // Back up: level 11 was not signed (the coordinator's mark was released), so it signs now.
    cluster.start_cosigner(2).await;
    sign_ok(&cluster, &coordinator, 2, &attestation(11, 1)).await;
    held.abort();
}

#[tokio::test]
async fn a_coordinator_with_an_empty_data_directory_cannot_get_a_conflicting_payload_signed() {
    let cluster = Cluster::new(3, 2).await;
    let first = cluster.coordinator("first").await;
    let signed = sign_ok(&cluster, &first, 2, &block(20, 0, 1)).await;
    sign_ok(&cluster, &first, 2, &preattestation(20, 0, 1)).await;
    first.kill9().await;
    // A new coordinator, nothing in its store: its own watermark lets anything through; the cosigners do not.
    let fresh = cluster.coordinator("fresh").await;
    for payload in [block(20, 0, 2), preattestation(20, 0, 2)] {
        let (status, body) = sign(&fresh, &cluster.pkh(), 2, &payload).await;
        // Every cosigner refused by its watermark: the baker sees a watermark refusal, as for any key.
        assert_eq!(status, 409, "{body}");
        assert_octez_error(&body, "refused (409)");
        assert_octez_error(&body, "0 of the 2 partial signatures needed");
    }
    // The identical block is answered with the identical signature.
    assert_eq!(sign_ok(&cluster, &fresh, 2, &block(20, 0, 1)).await, signed);
}

#[tokio::test]
async fn a_cosigner_whose_watermark_was_deleted_cannot_help_form_a_conflicting_signature() {
    let mut cluster = Cluster::new(3, 2).await;
    let coordinator = cluster.coordinator("coordinator").await;
    let a = attestation(30, 1);
    sign_ok(&cluster, &coordinator, 2, &a).await;
    // Every cosigner has answered A (the coordinator lets the third finish in the background; asking
    // again with the identical bytes makes sure, and returns the stored partial).
    let rogue = cluster.client(Some("coordinator"));
    for id in 1..=3 {
        let (status, body) = cluster.cosign(&rogue, id, 2, &a).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // Cosigner 1's host is taken: its watermark store is deleted.
    cluster.kill(1).await;
    let dir = cluster.dir("cosigner1");
    for file in ["watermarks.json", "watermarks.log", "watermarks.initialized"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    cluster.start_cosigner(1).await;
    let b = attestation(30, 2);
    let (status, body) = cluster.cosign(&rogue, 1, 2, &b).await.unwrap();
    assert_eq!(status, 200, "the wiped cosigner signs anything: {body}");
    cluster.partial(1, &b, BlsScheme::ProofOfPossession, &body);
    for id in [2, 3] {
        let (status, body) = cluster.cosign(&rogue, id, 2, &b).await.unwrap();
        assert_eq!(status, 409, "{body}");
    }
    let fresh = cluster.coordinator("fresh").await;
    let (status, body) = sign(&fresh, &cluster.pkh(), 2, &b).await;
    // Two of three refused by their watermarks: 2-of-3 is out of reach, a watermark refusal (409).
    assert_eq!(status, 409, "{body}");
    assert_octez_error(&body, "1 of the 2 partial signatures needed");
}

#[tokio::test]
async fn a_rogue_coordinator_gets_at_most_one_of_two_conflicting_payloads_to_m_partials() {
    let cluster = Cluster::new(5, 3).await;
    let rogue = Arc::new(cluster.client(Some("coordinator")));
    let cluster = Arc::new(cluster);
    for level in 40..46u32 {
        let payloads = [preattestation(level, 0, 1), preattestation(level, 0, 2)];
        // Each cosigner gets both payloads at once, in an order that differs between cosigners.
        let mut tasks = Vec::new();
        for id in 1..=5u8 {
            for k in 0..2 {
                let which = (usize::from(id) + k + level as usize) % 2;
                let (cluster, rogue, payload) = (cluster.clone(), rogue.clone(), payloads[which].clone());
                tasks.push(tokio::spawn(async move {
                    let (status, body) = cluster.cosign(&rogue, id, 2, &payload).await.unwrap();
                    (id, which, status, body)
                }));
            }
        }
        let mut partials: [Vec<(ShareId, Signature)>; 2] = [Vec::new(), Vec::new()];
        for task in tasks {
            let (id, which, status, body) = task.await.unwrap();
            match status {
                200 => {
                    let sig = cluster.partial(id, &payloads[which], BlsScheme::ProofOfPossession, &body);
                    partials[which].push((ShareId::new(id).unwrap(), sig));
                }
                409 => {}
                other => panic!("cosigner {id}: {other} {body}"),
            }
        }
        let full: Vec<usize> = (0..2).filter(|&w| partials[w].len() >= 3).collect();
        assert!(full.len() <= 1, "level {level}: both payloads reached 3 partials");
        // Each cosigner signed exactly one of the two.
        assert_eq!(partials[0].len() + partials[1].len(), 5, "level {level}");
        for w in full {
            let sig = threshold::combine(&partials[w], 3).unwrap();
            assert!(cluster
                .group
                .verify(&payloads[w], &sig, BlsScheme::ProofOfPossession));
        }
    }
}

#[tokio::test]
async fn sigkill_of_cosigners_mid_burst_never_gives_two_payloads_at_one_position() {
    let mut cluster = Cluster::new(3, 2).await;
    let coordinator = cluster.coordinator("coordinator").await;
    let rogue = cluster.client(Some("coordinator"));
    let http = reqwest::Client::new();
    // Position → payload → signatures seen (combined by the coordinator, or partials the rogue got).
    let mut combined: BTreeMap<u32, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut rogue_partials: BTreeMap<(u32, Vec<u8>), BTreeSet<u8>> = BTreeMap::new();
    let mut level = 50u32;
    for round in 0..4u8 {
        let mut tasks = Vec::new();
        for _ in 0..12 {
            level += 1;
            let a = attestation(level, 1);
            let b = attestation(level, 2);
            let url = format!("http://{}/keys/{}?version=2", coordinator.addr, cluster.pkh());
            let http = http.clone();
            tasks.push(tokio::spawn(async move {
                let r = http.post(url).json(&hex::encode(&a)).send().await;
                let sig = match r {
                    Ok(r) if r.status() == 200 => r.json::<Value>().await.ok(),
                    _ => None,
                };
                (level, a, sig)
            }));
            for id in 1..=3u8 {
                if cluster.cosigners.contains_key(&id) {
                    let fut = cluster.cosign(&rogue, id, 2, &b);
                    if let Ok((200, body)) = fut.await {
                        cluster.partial(id, &b, BlsScheme::ProofOfPossession, &body);
                        rogue_partials.entry((level, b.clone())).or_default().insert(id);
                    }
                }
            }
            if level % 12 == 5 {
                // Mid-burst: kill one or two cosigners, then bring them back on the same data directories.
                let victims: Vec<u8> = if round % 2 == 0 { vec![1] } else { vec![1, 2] };
                for id in &victims {
                    cluster.kill(*id).await;
                }
                for id in victims {
                    cluster.start_cosigner(id).await;
                }
            }
        }
        for task in tasks {
            let (level, a, body) = task.await.unwrap();
            if let Some(body) = body {
                let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
                assert!(cluster.group.verify(&a, &sig, BlsScheme::ProofOfPossession));
                combined.entry(level).or_default().insert(a);
            }
        }
    }
    let mut signed_a = 0;
    for ((level, b), ids) in &rogue_partials {
        if ids.len() >= 2 {
            let both = combined
                .get(level)
                .is_some_and(|s| !s.contains(b) && !s.is_empty());
            assert!(
                !both,
                "level {level}: the coordinator's payload and the rogue's both reached 2 partials"
            );
        }
    }
    for payloads in combined.values() {
        assert_eq!(payloads.len(), 1);
        signed_a += 1;
    }
    assert!(signed_a > 0, "the coordinator signed nothing during the burst");
}

#[tokio::test]
async fn startup_refuses_unsafe_or_broken_threshold_configurations() {
    let cluster = Cluster::new(3, 2).await;
    let good = cluster.coordinator_config(&[1, 2, 3], "");
    let share3 = cluster.share_keys[&3].to_string();
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("threshold = 2", "threshold = 1"),
            "is not a majority of 3 shares",
        ),
        (good.replace("id = 3\n", "id = 2\n"), "share id 2 is listed twice"),
        (
            good.replace(&share3, &SecretKey::generate(Curve::Bls).public_key().to_string()),
            "do not match the group key",
        ),
        (
            good.replace("url = \"https://", "url = \"http://"),
            "is not https",
        ),
        (
            good.replace(&cluster.file("coordinator.pem"), &cluster.file("missing.pem")),
            "threshold.client.certificate",
        ),
        (
            good.replace("[threshold.client]", "[threshold.nothing]"),
            "unknown field",
        ),
    ];
    for (i, (config, needle)) in cases.into_iter().enumerate() {
        let err = match cluster.coordinator_with(&format!("bad{i}"), &config).await {
            Ok(_) => panic!("case {i} started: {config}"),
            Err(log) => log,
        };
        assert!(err.contains(needle), "case {i}: {needle:?} not in {err}");
    }
    // Without [threshold.client] at all.
    let config: String = good
        .lines()
        .filter(|l| {
            !l.starts_with("certificate") && !l.starts_with("private_key") && !l.starts_with("server_ca")
        })
        .filter(|l| *l != "[threshold.client]")
        .map(|l| format!("{l}\n"))
        .collect();
    let err = cluster.coordinator_with("noclient", &config).await.err().unwrap();
    assert!(err.contains("[threshold.client] is missing"), "{err}");
}

#[tokio::test]
async fn cosigners_refuse_the_plain_route_plain_http_missing_or_unlisted_client_certificates() {
    let mut cluster = Cluster::new(3, 2).await;
    let pkh = cluster.pkh();
    let payload = attestation(60, 1);
    // The ordinary route on a share-only machine.
    let (status, body) = sign(&cluster.cosigners[&1], &pkh, 2, &payload).await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(
        &body,
        &format!("this machine holds share 1 of {pkh}; ask the coordinator"),
    );
    // /cosign over plain HTTP.
    let url = format!("http://{}/cosign/{pkh}?version=2", cluster.cosigners[&1].addr);
    let response = reqwest::Client::new()
        .post(url)
        .json(&hex::encode(&payload))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_octez_error(&response.json().await.unwrap(), "/cosign needs mTLS");
    // HTTPS without a client certificate: the handshake itself is refused.
    assert!(cluster
        .cosign(&cluster.client(None), 1, 2, &payload)
        .await
        .is_err());
    // A certificate of the CA that the group key's tls_clients does not name.
    let (status, body) = cluster
        .cosign(&cluster.client(Some("stranger")), 1, 2, &payload)
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_octez_error(&body, "tls_clients");
    // The coordinator's certificate is named: signed. GET describes the share.
    let (status, body) = cluster
        .cosign(&cluster.client(Some("coordinator")), 1, 2, &payload)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    cluster.partial(1, &payload, BlsScheme::ProofOfPossession, &body);
    let (status, info) = get_json(&format!("http://{}/cosign/{pkh}", cluster.cosigners[&2].addr)).await;
    assert_eq!(status, 200);
    assert_eq!(info["share_id"], 2);
    assert_eq!(
        (info["threshold"].as_u64(), info["shares"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(info["share_public_key"], cluster.share_keys[&2].to_string());
    // A second share of the same key on one machine is refused at import.
    let json = cluster.file("split.json");
    let (ok, _, err) = run(
        &["threshold", "import", &json, "--id", "2"],
        &cluster.dir("cosigner1"),
    )
    .await;
    assert!(!ok && err.contains("already holds share 1"), "{err}");
    let (ok, _, err) = run(
        &["threshold", "import", &json, "--id", "9"],
        &cluster.dir("other"),
    )
    .await;
    assert!(!ok && err.contains("share 9 is not in"), "{err}");
    cluster.kill(1).await;
}

#[tokio::test]
async fn a_coordinator_holding_a_share_signs_with_it_and_one_cosigner() {
    let mut cluster = Cluster::new(3, 2).await;
    // The coordinator's data directory holds share 1; cosigner 1 is stopped for good.
    cluster.kill(1).await;
    let dir = cluster.dir("coordinator");
    let json = cluster.file("split.json");
    let (ok, out, err) = run(&["threshold", "import", &json, "--id", "1"], &dir).await;
    assert!(ok, "{out}{err}");
    let config = cluster.coordinator_config(&[2, 3], "");
    let coordinator = cluster.coordinator_with("coordinator", &config).await.unwrap();
    sign_ok(&cluster, &coordinator, 2, &attestation(70, 1)).await;
    sign_ok(&cluster, &coordinator, 1, &block(70, 0, 1)).await;
    cluster.kill(2).await;
    sign_ok(&cluster, &coordinator, 2, &preattestation(71, 0, 1)).await;
    // Its own watermark protects its share: a conflicting payload is refused before any cosigner is asked.
    let (status, body) = sign(&coordinator, &cluster.pkh(), 2, &attestation(70, 2)).await;
    assert_eq!(status, 409, "{body}");
    // Listing its own share as a cosigner too is a duplicate id.
    let extra = format!(
        "[[threshold.groups.cosigners]]\nid = 1\nurl = \"https://127.0.0.1:1\"\nshare_public_key = \"{}\"\n",
        cluster.share_keys[&1]
    );
    let dir2 = cluster.dir("coordinator2");
    let (ok, _, err) = run(&["threshold", "import", &json, "--id", "1"], &dir2).await;
    assert!(ok, "{err}");
    let err = cluster
        .coordinator_with("coordinator2", &cluster.coordinator_config(&[2, 3], &extra))
        .await
        .err()
        .unwrap();
    assert!(err.contains("share id 1 appears twice"), "{err}");
}

#[tokio::test]
async fn sighup_keeps_serving_threshold_keys_on_coordinators_and_cosigners() {
    let mut cluster = Cluster::new(3, 2).await;
    let ids: Vec<u8> = cluster.share_keys.keys().copied().collect();
    let config = write(
        cluster.root.path(),
        "reloaded.toml",
        &cluster.coordinator_config(&ids, ""),
    );
    let dir = cluster.dir("reloaded");
    cluster.floor(&dir).await;
    let mut coordinator = crate::reload::Running::start(&dir, &config, &[]).await;
    // Cosigner 1 restarted with an operations listener, to be reloaded too.
    cluster.kill(1).await;
    let cosigner_config = PathBuf::from(cluster.file("cosigner1.toml"));
    let mut cosigner = crate::reload::Running::start(&cluster.dir("cosigner1"), &cosigner_config, &[]).await;
    let pkh = cluster.pkh();
    assert_eq!(coordinator.sign(&pkh, &attestation(80, 1)).await, 200);
    coordinator.reload_and_wait("ok", 1).await;
    cosigner.reload_and_wait("ok", 1).await;
    assert!(
        !coordinator.log().contains("key removed"),
        "{}",
        coordinator.log()
    );
    // Cosigner 1 after its reload is needed: cosigner 2 is down.
    cluster.kill(2).await;
    assert_eq!(coordinator.sign(&pkh, &attestation(81, 1)).await, 200);
    let (status, body) = sign(&coordinator.server, &pkh, 2, &attestation(82, 1)).await;
    assert_eq!(status, 200, "{body}");
    let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
    assert!(cluster
        .group
        .verify(&attestation(82, 1), &sig, BlsScheme::ProofOfPossession));
}

/// The `[azure]` section (Key Vault emulator, client secret) a machine needs to seal and unseal with it.
fn azure_section(emu: &kv_emulator::Emulator, dir: &Path) -> String {
    let config = crate::azure_cli::write_config(emu, dir, crate::azure_cli::CLIENT_SECRET);
    let text = std::fs::read_to_string(config).unwrap();
    text[text.find("[azure]").unwrap()..].to_owned()
}

#[tokio::test]
async fn a_share_sealed_by_the_vault_holds_only_ciphertext_and_its_cosigner_unseals_it_once_and_signs() {
    use kv_emulator::Operation;
    const SEAL: &str = "seal";
    let emu = crate::azure::emulator().await;
    emu.create_rsa_key(SEAL, 2048, &["wrapKey", "unwrapKey"])
        .expect("sealing key");
    let mut cluster = Cluster::new(3, 2).await;
    // Cosigner 1 keeps its share sealed instead: its config gains the vault, its share file is re-imported.
    cluster.kill(1).await;
    let dir = cluster.dir("cosigner1");
    let share_file = dir.join("shares").join(format!("{}.share", cluster.pkh()));
    std::fs::remove_file(&share_file).unwrap();
    let config = cluster.file("cosigner1.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&azure_section(&emu, &cluster.dir("azure")));
    std::fs::write(&config, text).unwrap();
    let json = cluster.file("split.json");
    // The command as docs/threshold.md prints it.
    let (ok, out, err) = run(
        &[
            "--config",
            &config,
            "threshold",
            "import",
            &json,
            "--id",
            "1",
            "--seal-with",
            SEAL,
        ],
        &dir,
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        err.contains(&format!("sealed by {}/keys/{SEAL}/", emu.url())),
        "{err}"
    );
    // On disk: the public parts and the vault's ciphertext, no form of the share's secret.
    let on_disk = std::fs::read_to_string(&share_file).unwrap();
    let split: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let secret = split["secret_shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == 1)
        .unwrap()["secret_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(on_disk.contains("secret_key = \"sealed:"), "{on_disk}");
    assert!(on_disk.contains(&cluster.share_keys[&1].to_string()));
    for needle in [secret.as_str(), "BLsk", "unencrypted"] {
        assert!(!on_disk.contains(needle), "{needle} on disk: {on_disk}");
    }
    // One unwrap at start; then a 2-of-3 that needs cosigner 1 (2 is down) signs under the group key.
    let before = emu.counters().get(Operation::UnwrapKey);
    cluster.start_cosigner(1).await;
    assert_eq!(emu.counters().get(Operation::UnwrapKey) - before, 1);
    cluster.kill(2).await;
    let coordinator = cluster.coordinator("coordinator").await;
    for payload in [preattestation(30, 0, 1), attestation(30, 1)] {
        sign_ok(&cluster, &coordinator, 2, &payload).await;
    }
    // An identity the vault no longer lets unwrap: the cosigner refuses to start, naming the share file,
    // the vault key and the role to grant, with or without a backtrace.
    cluster.kill(1).await;
    emu.faults().deny_key_operation(SEAL, Operation::UnwrapKey);
    for backtrace in ["0", "1"] {
        let err = Server::start_env(&dir, &["--config", &config], &[("RUST_BACKTRACE", backtrace)])
            .await
            .err()
            .expect("startup refused");
        for needle in [
            share_file.display().to_string(),
            format!("{}/keys/{SEAL}/", emu.url()),
            "grant it the 'Key Vault Crypto Service Encryption User' role on that key".to_owned(),
        ] {
            assert!(
                err.contains(&needle),
                "RUST_BACKTRACE={backtrace}: no {needle:?} in:\n{err}"
            );
        }
        assert!(!err.contains("BLsk") && !err.contains(&secret), "{err}");
    }
}

#[tokio::test]
async fn a_failed_request_leaves_the_coordinators_position_free_so_the_same_payload_signs_once_cosigners_are_back(
) {
    let mut cluster = Cluster::new(3, 2).await;
    let coordinator = cluster.coordinator("coordinator").await;
    let pkh = cluster.pkh();
    for (i, payload) in [preattestation(70, 2, 1), attestation(70, 1), block(71, 1, 1)]
        .into_iter()
        .enumerate()
    {
        // A majority down: refused, naming each cosigner that did not answer.
        cluster.kill(2).await;
        cluster.kill(3).await;
        let (status, body) = sign(&coordinator, &pkh, 2, &payload).await;
        assert_eq!(status, 500, "payload {i}: {body}");
        assert_octez_error(&body, "1 of the 2 partial signatures needed (2-of-3)");
        for id in [2, 3] {
            assert_octez_error(
                &body,
                &format!(
                    "cosigner {id} at https://127.0.0.1:{}: unreachable",
                    cluster.ports[&id]
                ),
            );
        }
        // Back up: the same bytes at the same level and round sign (the coordinator's reservation was
        // dropped with the failure; cosigner 1 answers its stored partial for identical bytes).
        cluster.start_cosigner(2).await;
        cluster.start_cosigner(3).await;
        let (status, body) = sign(&coordinator, &pkh, 2, &payload).await;
        assert_eq!(status, 200, "payload {i}: the retry was refused: {body}");
        let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
        assert!(cluster.group.verify(&payload, &sig, BlsScheme::ProofOfPossession));
    }
}

#[tokio::test]
async fn cosigners_refusing_by_watermark_give_409_and_leave_the_coordinator_free_for_what_they_signed() {
    let mut cluster = Cluster::new(3, 2).await;
    let coordinator = cluster.coordinator("coordinator").await;
    let pkh = cluster.pkh();
    // Another coordinator (a failover, or this test) got every cosigner's partial for A at level 50.
    let other = cluster.client(Some("coordinator"));
    let signed_a = attestation(50, 1);
    for id in 1..=3 {
        let (status, body) = cluster.cosign(&other, id, 2, &signed_a).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // The baker asks this coordinator for B at the same level: every cosigner refuses by its watermark.
    // The baker sees a watermark refusal (409, as for any key), naming each cosigner and why.
    let (status, body) = sign(&coordinator, &pkh, 2, &attestation(50, 2)).await;
    assert_eq!(status, 409, "{body}");
    assert_octez_error(&body, "watermark: threshold key");
    assert_octez_error(&body, "0 of the 2 partial signatures needed (2-of-3)");
    for id in 1..=3 {
        assert_octez_error(
            &body,
            &format!(
                "cosigner {id} at https://127.0.0.1:{}: refused (409): watermark",
                cluster.ports[&id]
            ),
        );
    }
    // Had the coordinator kept B's reservation at (50, 0), A (other bytes at that position) would be 409
    // here. It did not: A signs (the cosigners replay their partials) and verifies under the group key.
    sign_ok(&cluster, &coordinator, 2, &signed_a).await;
    // A watermark refusal that alone does not block the threshold (1 of 3) with one cosigner down is an
    // outage, not a double-signing refusal: 500.
    let (status, _) = cluster.cosign(&other, 1, 2, &attestation(51, 1)).await.unwrap();
    assert_eq!(status, 200);
    cluster.kill(3).await;
    let (status, body) = sign(&coordinator, &pkh, 2, &attestation(51, 2)).await;
    assert_eq!(status, 500, "{body}");
    assert_octez_error(&body, "cosigner 1 at");
    assert_octez_error(&body, "refused (409)");
    assert_octez_error(&body, "cosigner 3 at");
}

#[tokio::test]
async fn a_cosigner_whose_group_key_has_no_tls_clients_refuses_to_start_naming_the_key_and_the_setting() {
    let mut cluster = Cluster::new(3, 2).await;
    let pkh = cluster.pkh();
    cluster.kill(1).await;
    // Cosigner 1 without tls_clients: any certificate of its client_ca could ask for partials.
    let config = cluster.file("cosigner1.toml");
    let open: String = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("tls_clients"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, &open).unwrap();
    let dir = cluster.dir("cosigner1");
    let share_file = dir.join("shares").join(format!("{pkh}.share"));
    for backtrace in ["0", "1"] {
        let _ = std::fs::remove_file(dir.with_extension("stderr.log"));
        let err = Server::start_env(&dir, &["--config", &config], &[("RUST_BACKTRACE", backtrace)])
            .await
            .err()
            .expect("startup refused");
        for needle in [
            format!("{}: share 1 of threshold key {pkh}", share_file.display()),
            "to any client certificate that [server.tls] client_ca accepts".to_owned(),
            format!("[policy.keys.{pkh}] has no tls_clients"),
            format!("[policy.keys.{pkh}] tls_clients = [\"cn:<coordinator certificate CN>\"]"),
        ] {
            assert!(
                err.contains(&needle),
                "RUST_BACKTRACE={backtrace}: no {needle:?} in:\n{err}"
            );
        }
        if backtrace == "0" {
            assert!(!err.contains("Stack backtrace"), "{err}");
        }
    }
    // Named in [policy.default] instead (no section of its own): starts, and signs for the coordinator.
    let default_section = open
        .replace(&format!("[policy.keys.{pkh}]"), "[policy.default]")
        .replace("allow = [", "tls_clients = [\"cn:coordinator\"]\nallow = [");
    std::fs::write(&config, default_section).unwrap();
    cluster.start_cosigner(1).await;
    let payload = attestation(80, 1);
    let (status, body) = cluster
        .cosign(&cluster.client(Some("coordinator")), 1, 2, &payload)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster
        .cosign(&cluster.client(Some("stranger")), 1, 2, &attestation(81, 1))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
}
