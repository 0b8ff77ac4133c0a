//! The high watermark over HTTP: the shared sequences, replays without a backend call, refusals, and
//! concurrent conflicting requests.

use std::sync::atomic::Ordering;

use tezos::builder::ConsensusPayload;
use tezos::{BlsScheme, Curve, SecretKey, Signature};

use crate::helpers::{assert_octez_error, vector_payload, vectors, TestSigner};

#[tokio::test]
async fn shared_watermark_sequences_get_the_expected_statuses() {
    let v = vectors("payloads.json");
    for seq in v["watermark_sequences"].as_array().unwrap() {
        // Each sequence starts from an empty watermark, for one key.
        let (signer, calls) = TestSigner::start_counting(&[SecretKey::generate(Curve::P256)]).await;
        let (_, pkh, pk) = signer.key(Curve::P256).clone();
        let mut signed: Vec<(Vec<u8>, serde_json::Value)> = Vec::new();
        for (i, step) in seq["steps"].as_array().unwrap().iter().enumerate() {
            let bytes = hex::decode(step["hex"].as_str().unwrap()).unwrap();
            let before = calls.load(Ordering::SeqCst);
            let (status, body) = signer.sign(&pkh, "?version=3", &bytes).await;
            let expected = step["expect_status"].as_u64().unwrap() as u16;
            assert_eq!(
                status, expected,
                "{} step {i} ({}): {body}",
                seq["name"], step["note"]
            );
            let backend_called = calls.load(Ordering::SeqCst) > before;
            if status == 200 {
                let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
                assert!(pk.verify(&bytes, &sig, BlsScheme::default()));
                if let Some((_, earlier)) = signed.iter().find(|(b, _)| *b == bytes) {
                    assert_eq!(
                        earlier, &body["signature"],
                        "replay must return the stored signature"
                    );
                    assert!(!backend_called, "replay called the backend");
                } else {
                    assert!(backend_called);
                }
                signed.push((bytes, body["signature"].clone()));
            } else {
                assert!(!backend_called, "a refused request called the backend");
                assert_octez_error(&body, "watermark:");
            }
        }
        signer.stop().await;
    }
}

fn attestation(level: u32, round: u32, payload_hash: u8) -> Vec<u8> {
    ConsensusPayload::attestation(level, round)
        .payload_hash([payload_hash; 32])
        .bytes()
}

#[tokio::test]
async fn refusal_message_names_kind_chain_key_and_levels() {
    let signer = TestSigner::start_with(&[SecretKey::generate(Curve::Secp256k1)], |_| {}).await;
    let (_, pkh, _) = signer.key(Curve::Secp256k1).clone();
    assert_eq!(signer.sign(&pkh, "", &attestation(120, 0, 1)).await.0, 200);
    let (status, body) = signer.sign(&pkh, "", &attestation(120, 0, 2)).await;
    assert_eq!(status, 409);
    assert_octez_error(
        &body,
        &format!(
            "watermark: attestation at level 120 round 0 for {pkh} on NetXdQprcVkpaWU already signed with \
             different data (high watermark level 120 round 0)"
        ),
    );
    let (status, body) = signer.sign(&pkh, "", &attestation(119, 5, 1)).await;
    assert_eq!(status, 409);
    assert_octez_error(&body, "level 119 round 5");
    assert_octez_error(&body, "not above the high watermark (level 120 round 0)");
    signer.stop().await;
}

#[tokio::test]
async fn concurrent_conflicting_requests_yield_exactly_one_signature() {
    let keys = [
        SecretKey::generate(Curve::P256),
        SecretKey::generate(Curve::Ed25519),
    ];
    let (signer, calls) = TestSigner::start_counting(&keys).await;
    let signer = std::sync::Arc::new(signer);
    for (_, pkh, pk) in signer.keys.clone() {
        for level in 1..=5u32 {
            let mut tasks = Vec::new();
            // 32 different payloads at the same level and round, and 32 copies of one payload.
            for i in 0..64u8 {
                let s = signer.clone();
                let payload = attestation(level, 0, if i < 32 { i } else { 200 });
                tasks.push(tokio::spawn(async move {
                    let (status, body) = s.sign(&pkh, "", &payload).await;
                    (payload, status, body)
                }));
            }
            let mut winners = std::collections::HashMap::new();
            for t in tasks {
                let (payload, status, body) = t.await.unwrap();
                match status {
                    200 => {
                        let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
                        assert!(pk.verify(&payload, &sig, BlsScheme::default()));
                        let previous = winners.insert(payload.clone(), body["signature"].clone());
                        if let Some(previous) = previous {
                            assert_eq!(
                                previous, body["signature"],
                                "identical payloads, different signatures"
                            );
                        }
                    }
                    409 => assert_octez_error(&body, "already signed with different data"),
                    other => panic!("unexpected status {other}: {body}"),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "{pkh} level {level}: {} payloads signed",
                winners.len()
            );
        }
    }
    // One backend call per (key, level): the rest were refused or replayed.
    assert_eq!(calls.load(Ordering::SeqCst), 2 * 5);
    match std::sync::Arc::try_unwrap(signer) {
        Ok(s) => s.stop().await,
        Err(_) => panic!("signer still shared"),
    }
}

#[tokio::test]
async fn kinds_and_keys_have_independent_marks() {
    let keys = [SecretKey::generate(Curve::P256), SecretKey::generate(Curve::P256)];
    let signer = TestSigner::start_with(&keys, |c| {
        c.policy.default.allow = ["preattestation", "attestation", "generic_unchecked"]
            .map(|k| k.parse().unwrap())
            .to_vec();
    })
    .await;
    let operation = [0x03, 0x00];
    let a = signer.keys[0].1;
    let b = signer.keys[1].1;
    assert_eq!(signer.sign(&a, "", &attestation(10, 0, 1)).await.0, 200);
    // Another key at the same level and round, with other bytes.
    assert_eq!(signer.sign(&b, "", &attestation(10, 0, 2)).await.0, 200);
    // A preattestation at the same level and round for the same key.
    let mut pre = attestation(10, 0, 3);
    pre[0] = 0x12;
    pre[37] = 20;
    assert_eq!(signer.sign(&a, "", &pre).await.0, 200);
    // Generic operations are not watermarked.
    assert_eq!(signer.sign(&a, "", &operation).await.0, 200);
    assert_eq!(signer.sign(&a, "", &operation).await.0, 200);
    signer.stop().await;
}

#[tokio::test]
async fn unprotected_keys_sign_conflicts_when_configured() {
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let signer = TestSigner::start_with(&[sk], |c| c.watermark.unprotected_keys = vec![pkh]).await;
    assert_eq!(signer.sign(&pkh, "", &attestation(10, 0, 1)).await.0, 200);
    assert_eq!(signer.sign(&pkh, "", &attestation(10, 0, 2)).await.0, 200);
    assert_eq!(signer.sign(&pkh, "", &attestation(9, 0, 2)).await.0, 200);
    signer.stop().await;
}

#[tokio::test]
async fn a_replay_with_another_bls_scheme_is_refused() {
    let sk = SecretKey::generate(Curve::Bls);
    let pkh = sk.public_key().hash();
    let signer = TestSigner::start_with(&[sk], |_| {}).await;
    let payload = vector_payload("tezt-bls-mode-attestation");
    assert_eq!(signer.sign(&pkh, "?version=3", &payload).await.0, 200);
    assert_eq!(signer.sign(&pkh, "?version=3", &payload).await.0, 200);
    let (status, body) = signer.sign(&pkh, "?version=1", &payload).await;
    assert_eq!(status, 409);
    assert_octez_error(&body, "another signature version");
    signer.stop().await;
}

/// A Tenderbake preattestation (magic 0x12, tag 20) on `chain` at `level`, round 0.
fn preattestation_on(chain: [u8; 4], level: u32) -> Vec<u8> {
    ConsensusPayload::preattestation(level, 0)
        .chain(chain)
        .payload_hash([0x42; 32])
        .bytes()
}

#[tokio::test]
async fn preattestations_on_invented_chains_are_refused_beyond_the_bound() {
    let secrets = [
        SecretKey::generate(Curve::P256),
        SecretKey::generate(Curve::Ed25519),
    ];
    let signer = TestSigner::start_with(&secrets, |c| c.watermark.max_chains = 2).await;
    let (_, p256, _) = signer.key(Curve::P256).clone();
    let (_, ed, _) = signer.key(Curve::Ed25519).clone();
    let chain = |i: u32| i.to_be_bytes();
    assert_eq!(
        signer.sign(&p256, "", &preattestation_on(chain(1), 5)).await.0,
        200
    );
    assert_eq!(
        signer.sign(&p256, "", &preattestation_on(chain(2), 5)).await.0,
        200
    );
    for pkh in [&p256, &ed] {
        let (status, body) = signer.sign(pkh, "", &preattestation_on(chain(3), 5)).await;
        assert_eq!(status, 409, "{body}");
        let third = tezos::ChainId(chain(3)).to_string();
        assert_octez_error(
            &body,
            &format!("for {pkh} on {third} is on a chain this store has no mark for"),
        );
        assert_octez_error(&body, "(watermark.max_chains = 2)");
        assert_octez_error(&body, "raise [watermark] max_chains");
        assert_octez_error(&body, "policy.keys.<pkh>.chains");
    }
    let marks = signer.watermark_marks().await;
    assert!(
        marks.keys().all(|k| k.chain != tezos::ChainId(chain(3))),
        "{marks:?}"
    );
    assert_eq!(marks.len(), 2);
    // Chains the store knows go on, for any key.
    assert_eq!(
        signer.sign(&p256, "", &preattestation_on(chain(1), 6)).await.0,
        200
    );
    assert_eq!(signer.sign(&ed, "", &preattestation_on(chain(2), 6)).await.0, 200);
    signer.stop().await;
}

#[tokio::test]
async fn one_signature_appends_a_line_to_the_log_and_leaves_a_20000_mark_snapshot_alone() {
    use std::os::unix::fs::MetadataExt;
    use tzkms::watermark::file::{LOG_FILE, STORE_FILE};
    use tzkms::watermark::interchange::Marks;
    use tzkms::watermark::{Mark, MarkKey};
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let mut data_dir = std::path::PathBuf::new();
    let signer = TestSigner::start_with(&[sk], |c| {
        // What the attack left: one mark on each of 20,000 invented chains.
        c.watermark.max_chains = 0;
        data_dir = c.data_dir.clone().unwrap();
        let mut marks = Marks::new();
        for i in 0..20_000u32 {
            let key = MarkKey {
                chain: tezos::ChainId((i + 1_000_000).to_be_bytes()),
                pkh,
                kind: tezos::ConsensusKind::Preattestation,
            };
            let mark = Mark {
                level: tezos::Level(1000),
                round: tezos::Round(0),
                hash: [1; 32],
                signature: Some(Signature::Generic([1; 64])),
            };
            marks.insert(key, mark);
        }
        tzkms::watermark::file::write(&data_dir, &marks).unwrap();
        tzkms::watermark::file::mark_initialized(&data_dir).unwrap();
    })
    .await;
    let snapshot = std::fs::metadata(data_dir.join(STORE_FILE)).unwrap();
    assert!(snapshot.len() > 20_000 * 200, "{} bytes", snapshot.len());
    let log_before = std::fs::metadata(data_dir.join(LOG_FILE)).unwrap().len();
    let (status, body) = signer.sign(&pkh, "", &attestation(120, 0, 1)).await;
    assert_eq!(status, 200, "{body}");
    let log_after = std::fs::metadata(data_dir.join(LOG_FILE)).unwrap().len();
    let grown = log_after - log_before;
    assert!(grown > 0 && grown < 400, "one signature appended {grown} bytes");
    let after = std::fs::metadata(data_dir.join(STORE_FILE)).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
        (
            snapshot.ino(),
            snapshot.len(),
            snapshot.mtime(),
            snapshot.mtime_nsec()
        ),
        "the snapshot was rewritten"
    );
    assert_eq!(signer.watermark_marks().await.len(), 20_001);
    signer.stop().await;
}
