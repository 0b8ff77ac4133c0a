//! Consensus keys as today's bakers use them: each key type signs its own attestation tags (refused before
//! the watermark otherwise), a tz4 baker's companion key signs the same tag-41 bytes as its consensus
//! key, and consensus keeps signing when the generic operation decoder does not know a tag.

use tezos::builder::ConsensusPayload;
use tezos::{BlsScheme, Curve, SecretKey, Signature};

use crate::helpers::{assert_octez_error, TestSigner};

/// A consensus operation at `level` and `round` on mainnet: tags 20, 21 (80 bytes, with a slot), 23 (with a
/// DAL bitset), 40, 41 (78 bytes, no slot). `variant` fills the block payload hash.
fn consensus(tag: u8, level: u32, round: u32, variant: u8) -> Vec<u8> {
    ConsensusPayload::new(tag, level, round)
        .slot(3)
        .payload_hash([variant; 32])
        .dal(if tag == 23 { &[0x05] } else { &[] })
        .bytes()
}

fn signature(body: &serde_json::Value) -> Signature {
    body["signature"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_tag_for_another_key_type_is_refused_before_the_watermark() {
    let signer = TestSigner::start_with(
        &[
            SecretKey::generate(Curve::Bls),
            SecretKey::generate(Curve::Ed25519),
        ],
        |_| {},
    )
    .await;
    let (_, tz4, _) = signer.key(Curve::Bls).clone();
    let (_, tz1, _) = signer.key(Curve::Ed25519).clone();
    // (key, wrong tag, its message, the tag Octez sends for that key at the same position)
    let cases = [
        (tz4, 20, "a tz4 key signs preattestations as tag 40", 40),
        (tz4, 21, "a tz4 key signs attestations as tag 41", 41),
        (tz4, 23, "a tz4 key signs attestations as tag 41", 41),
        (
            tz1,
            40,
            "tz1, tz2 and tz3 keys sign preattestations as tag 20",
            20,
        ),
        (
            tz1,
            41,
            "tz1, tz2 and tz3 keys sign attestations as tag 21 or 23",
            21,
        ),
    ];
    for (i, (pkh, wrong, message, right)) in cases.into_iter().enumerate() {
        let level = 100 + i as u32;
        let before = signer.watermark_marks().await;
        let (status, body) = signer
            .sign(&pkh, "?version=3", &consensus(wrong, level, 2, 1))
            .await;
        assert_eq!(status, 400, "{pkh} tag {wrong}: {body}");
        assert_octez_error(
            &body,
            &format!("tag {wrong}) cannot be signed by a tz{}", &pkh.to_string()[2..3]),
        );
        assert_octez_error(&body, message);
        assert_eq!(
            signer.watermark_marks().await,
            before,
            "a refused tag {wrong} touched the watermark"
        );
        // The request Octez does send at that level and round signs.
        let bytes = consensus(right, level, 2, 1);
        let (status, body) = signer.sign(&pkh, "?version=3", &bytes).await;
        assert_eq!(status, 200, "{pkh} tag {right} after tag {wrong}: {body}");
        let pk = signer.keys.iter().find(|(_, p, _)| *p == pkh).unwrap().2.clone();
        assert!(pk.verify(&bytes, &signature(&body), BlsScheme::ProofOfPossession));
        assert_ne!(signer.watermark_marks().await, before);
    }
    signer.stop().await;
}

#[tokio::test]
async fn companion_and_consensus_keys_each_sign_the_same_tag_41_bytes_once() {
    let consensus_key = SecretKey::generate(Curve::Bls);
    let companion_key = SecretKey::generate(Curve::Bls);
    let keys = [
        consensus_key.public_key().clone(),
        companion_key.public_key().clone(),
    ];
    let companion = keys[1].hash();
    let signer = TestSigner::start_with(&[consensus_key, companion_key], |c| {
        // The companion key's policy as docs/watermark.md writes it: attestations only.
        let policy: tzkms::config::KeyPolicyConfig = toml::from_str("allow = [\"attestation\"]").unwrap();
        c.policy.keys.insert(companion, policy);
    })
    .await;
    let bytes = consensus(41, 7_000_000, 0, 1);
    let mut signatures = Vec::new();
    for pk in &keys {
        let (status, body) = signer.sign(&pk.hash(), "?version=3", &bytes).await;
        assert_eq!(status, 200, "{}: {body}", pk.hash());
        let sig = signature(&body);
        assert!(pk.verify(&bytes, &sig, BlsScheme::ProofOfPossession));
        signatures.push(sig);
    }
    assert_ne!(signatures[0], signatures[1]);
    assert!(!keys[0].verify(&bytes, &signatures[1], BlsScheme::ProofOfPossession));
    assert!(!keys[1].verify(&bytes, &signatures[0], BlsScheme::ProofOfPossession));
    for (pk, sig) in keys.iter().zip(&signatures) {
        // Identical bytes again: each key's stored signature.
        let (status, body) = signer.sign(&pk.hash(), "?version=3", &bytes).await;
        assert_eq!((status, signature(&body)), (200, *sig), "{}", pk.hash());
        // Different bytes at the same level and round: refused for each key.
        let (status, body) = signer
            .sign(&pk.hash(), "?version=3", &consensus(41, 7_000_000, 0, 2))
            .await;
        assert_eq!(status, 409, "{}: {body}", pk.hash());
        assert_octez_error(&body, "already signed with different data");
    }
    let m = signer.metrics().await;
    for pk in &keys {
        let series = |outcome: &str| {
            format!(
                "tzkms_requests_total{{route=\"sign\",kind=\"attestation\",key=\"{}\",outcome=\"{outcome}\"}} 1",
                pk.hash()
            )
        };
        assert!(m.contains(&series("signed")), "{m}");
        assert!(m.contains(&series("replayed")), "{m}");
    }
    // Each key keeps its own mark at the position.
    let marks = signer.watermark_marks().await;
    assert_eq!(marks.len(), 2, "{marks:?}");
    // The companion key's policy is attestations only.
    let (status, _) = signer
        .sign(&companion, "?version=3", &consensus(40, 7_000_001, 0, 1))
        .await;
    assert_eq!(status, 403);
    signer.stop().await;
}

#[tokio::test]
async fn consensus_signs_while_the_generic_decoder_refuses_an_unknown_tag() {
    let signer = TestSigner::start_allowing(&["block", "preattestation", "attestation", "transaction"]).await;
    let (_, tz4, _) = signer.key(Curve::Bls).clone();
    let (_, tz2, _) = signer.key(Curve::Secp256k1).clone();
    // A 0x03 operation whose tag (99) no protocol defines yet, as after an upgrade the decoder lags.
    let mut generic = vec![0x03];
    generic.extend_from_slice(&[0x22; 32]);
    generic.push(99);
    generic.extend_from_slice(&[0; 40]);
    for pkh in [tz4, tz2] {
        let (status, body) = signer.sign(&pkh, "?version=3", &generic).await;
        assert_eq!(status, 403, "{body}");
        assert_octez_error(&body, "unknown tag 99");
    }
    let (status, body) = signer.sign(&tz4, "?version=3", &consensus(41, 9, 0, 1)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = signer.sign(&tz2, "?version=3", &consensus(23, 9, 0, 1)).await;
    assert_eq!(status, 200, "{body}");
    signer.stop().await;
}
