//! The per-key policy over HTTP: refusals are 403 naming the rule; allowed kinds sign.

use tezos::{Curve, PublicKeyHash, SecretKey};
use tzkms::config::KeyPolicyConfig;

use crate::helpers::{assert_octez_error, vector_payload, vectors, TestSigner};

fn transaction(source: &PublicKeyHash, to: &PublicKeyHash) -> Vec<u8> {
    let mut p = vec![0x03];
    p.extend([0x5a; 32]);
    p.push(108);
    p.extend(source.to_binary());
    p.extend([0xe8, 0x07, 0x07, 0xbc, 0x50, 0x81, 0x02, 0xc0, 0x84, 0x3d, 0x00]);
    p.extend(to.to_binary());
    p.push(0x00);
    p
}

#[tokio::test]
async fn a_key_without_policy_signs_consensus_only() {
    let signer = TestSigner::start().await;
    for (_, pkh, _) in &signer.keys {
        let (status, body) = signer.sign(pkh, "", &vector_payload("sig-req-operation")).await;
        assert_eq!(status, 403, "{body}");
        assert_octez_error(
            &body,
            &format!("policy: key {pkh} may not sign generic operations (policy.default.allow)"),
        );
        let (status, body) = signer.sign(pkh, "", &[0x05, 0x00, 0x01]).await;
        assert_eq!(status, 403, "{body}");
        assert_octez_error(&body, "may not sign michelson_data");
    }
    signer.stop().await;
}

#[tokio::test]
async fn per_key_policies_allow_kinds_and_destinations() {
    let keys = [
        SecretKey::generate(Curve::P256),
        SecretKey::generate(Curve::Ed25519),
    ];
    let payouts = SecretKey::generate(Curve::Ed25519).public_key().hash();
    let stranger = SecretKey::generate(Curve::Ed25519).public_key().hash();
    let operator = keys[0].public_key().hash();
    let baker = keys[1].public_key().hash();
    let signer = TestSigner::start_with(&keys, |c| {
        c.policy.keys.insert(
            operator,
            KeyPolicyConfig {
                allow: vec!["transaction".parse().unwrap()],
                transaction_destinations: Some(vec![tezos::Address::Implicit(payouts)]),
                ..KeyPolicyConfig::default()
            },
        );
    })
    .await;
    let (status, body) = signer
        .sign(&operator, "", &transaction(&operator, &payouts))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = signer
        .sign(&operator, "", &transaction(&operator, &stranger))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(
        &body,
        &format!(
            "may not send a transaction to {stranger} (policy.keys.{operator}.transaction_destinations)"
        ),
    );
    // The operator key's section replaces the default: no consensus payloads.
    let (status, body) = signer
        .sign(&operator, "", &vector_payload("tezt-attestation"))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(
        &body,
        &format!("may not sign attestation (policy.keys.{operator}.allow)"),
    );
    // The other key keeps the default.
    let (status, body) = signer.sign(&baker, "", &transaction(&baker, &payouts)).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = signer.sign(&baker, "", &vector_payload("tezt-attestation")).await;
    assert_eq!(status, 200);
    signer.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_operations_are_refused() {
    let keys = [SecretKey::generate(Curve::P256)];
    let pkh = keys[0].public_key().hash();
    let signer = TestSigner::start_with(&keys, |c| {
        c.policy.default.allow = vec!["transaction".parse().unwrap()];
    })
    .await;
    let mut truncated = transaction(&pkh, &pkh);
    truncated.pop();
    let (status, body) = signer.sign(&pkh, "", &truncated).await;
    assert_eq!(status, 400, "{body}");
    assert_octez_error(
        &body,
        "malformed generic operation: operation 0 (transaction): truncated",
    );
    let mut unknown = vec![0x03];
    unknown.extend([0; 32]);
    unknown.extend([0x99, 0x00]);
    let (status, body) = signer.sign(&pkh, "", &unknown).await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(&body, "unknown tag 153");
    signer.stop().await;
}

#[tokio::test]
async fn chains_restrict_consensus_payloads() {
    let keys = [SecretKey::generate(Curve::P256)];
    let signer = TestSigner::start_with(&keys, |c| {
        c.policy.default.chains = Some(vec!["NetXxkAx4woPLyu".parse().unwrap()]);
    })
    .await;
    let pkh = keys[0].public_key().hash();
    let (status, _) = signer.sign(&pkh, "", &vector_payload("sig-req-block")).await;
    assert_eq!(status, 200);
    let (status, body) = signer.sign(&pkh, "", &vector_payload("tezt-attestation")).await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(
        &body,
        "may not sign for chain NetXdQprcVkpaWU (policy.default.chains)",
    );
    signer.stop().await;
}

#[tokio::test]
async fn known_keys_and_proof_of_possession_routes_are_off_by_default() {
    let signer = TestSigner::start().await;
    let (status, body) = signer.get("/known_keys").await;
    assert_eq!(status, 403);
    assert_octez_error(&body, "server.allow_list_known_keys");
    let (_, tz4, _) = signer.key(Curve::Bls).clone();
    let (status, body) = signer.get(&format!("/bls_prove_possession/{tz4}")).await;
    assert_eq!(status, 403);
    assert_octez_error(&body, "server.allow_prove_possession");
    signer.stop().await;
}

#[tokio::test]
async fn known_keys_and_proofs_of_possession_when_enabled() {
    let v = vectors("signatures.json");
    let pops = v["bls_proofs_of_possession"].as_array().unwrap();
    let with_override = pops.iter().find(|p| !p["override_pk"].is_null()).unwrap();
    let plain = pops.iter().find(|p| p["override_pk"].is_null()).unwrap();
    let secrets: Vec<SecretKey> = [with_override, plain]
        .iter()
        .map(|p| p["sk"].as_str().unwrap().parse().unwrap())
        .chain([SecretKey::generate(Curve::P256)])
        .collect();
    let signer = TestSigner::start_with(&secrets, |c| {
        c.server.allow_list_known_keys = true;
        c.server.allow_prove_possession = true;
    })
    .await;
    let (status, body) = signer.get("/known_keys").await;
    assert_eq!(status, 200);
    let mut expected: Vec<String> = signer.keys.iter().map(|k| k.1.to_string()).collect();
    expected.sort();
    assert_eq!(body["known_keys"], serde_json::json!(expected));

    let (status, body) = signer
        .get(&format!(
            "/bls_prove_possession/{}",
            plain["pkh"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bls_prove_possession"], plain["proof"]);
    let (status, body) = signer
        .get(&format!(
            "/bls_prove_possession/{}?bls_pk={}",
            with_override["pkh"].as_str().unwrap(),
            with_override["override_pk"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["bls_prove_possession"], with_override["proof"]);

    let tz3 = secrets[2].public_key().hash();
    let (status, body) = signer.get(&format!("/bls_prove_possession/{tz3}")).await;
    assert_eq!(status, 400);
    assert_octez_error(&body, "not a BLS key");
    signer.stop().await;
}

fn generic(contents: &[u8]) -> Vec<u8> {
    [vec![0x03], vec![0x5a; 32], contents.to_vec()].concat()
}

#[tokio::test]
async fn never_signed_operations_are_refused_even_under_generic_unchecked() {
    let keys = [SecretKey::generate(Curve::Ed25519)];
    let pkh = keys[0].public_key().hash();
    let signer = TestSigner::start_with(&keys, crate::helpers::allow_generic_unchecked).await;
    // An attestation (tag 21) and a tz4 attestation (tag 41) as generic operations, and a
    // seed nonce revelation: no client sends them, so no policy may sign them.
    let cases = [
        ([vec![21], vec![0; 42]].concat(), "attestation (tag 21)"),
        ([vec![41], vec![0; 40]].concat(), "bls_mode_attestation (tag 41)"),
        ([vec![1], vec![0; 36]].concat(), "seed_nonce_revelation (tag 1)"),
    ];
    for (contents, name) in cases {
        let (status, body) = signer.sign(&pkh, "", &generic(&contents)).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert_octez_error(
            &body,
            &format!("policy: key {pkh} may not sign operation 0, {name}: tzkms never signs it"),
        );
        assert_octez_error(&body, "(never signed)");
    }
    // The same key still signs what generic_unchecked is for.
    let (status, body) = signer.sign(&pkh, "", &[0x03, 0x12, 0x34]).await;
    assert_eq!(status, 200, "{body}");
    signer.stop().await;
}

#[tokio::test]
async fn destinations_pin_drains_and_originations_too() {
    let keys = [SecretKey::generate(Curve::Ed25519)];
    let key = keys[0].public_key().hash();
    let payouts = SecretKey::generate(Curve::Ed25519).public_key().hash();
    let stranger = SecretKey::generate(Curve::Ed25519).public_key().hash();
    let delegate = SecretKey::generate(Curve::Ed25519).public_key().hash();
    let signer = TestSigner::start_with(&keys, |c| {
        c.policy.default = KeyPolicyConfig {
            allow: ["transaction", "drain_delegate", "origination"]
                .map(|k| k.parse().unwrap())
                .to_vec(),
            transaction_destinations: Some(vec![tezos::Address::Implicit(payouts)]),
            ..KeyPolicyConfig::default()
        };
    })
    .await;
    // drain_delegate: consensus key ‖ delegate ‖ destination.
    let drain = |to: &PublicKeyHash| {
        generic(
            &[
                vec![9],
                key.to_binary().to_vec(),
                delegate.to_binary().to_vec(),
                to.to_binary().to_vec(),
            ]
            .concat(),
        )
    };
    let (status, body) = signer.sign(&key, "", &drain(&stranger)).await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(
        &body,
        &format!("may not send a drain_delegate to {stranger} (policy.default.transaction_destinations)"),
    );
    let (status, body) = signer.sign(&key, "", &drain(&payouts)).await;
    assert_eq!(status, 200, "{body}");
    // An origination of a contract holding 100 tez (zarith 80c2d72f): its address is unknown in advance.
    let origination = |balance: &[u8]| {
        let mut op = vec![109];
        op.extend(key.to_binary());
        op.extend([0xe8, 0x07, 0x07, 0xbc, 0x50, 0x81, 0x02]);
        op.extend(balance);
        op.push(0x00); // no delegate
        op.extend([0, 0, 0, 2, 0x02, 0x00]); // code
        op.extend([0, 0, 0, 2, 0x03, 0x0b]); // storage
        generic(&op)
    };
    let (status, body) = signer
        .sign(&key, "", &origination(&[0x80, 0xc2, 0xd7, 0x2f]))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(
        &body,
        "may not originate a contract with a balance of 100000000 mutez",
    );
    let (status, body) = signer.sign(&key, "", &origination(&[0x00])).await;
    assert_eq!(status, 200, "{body}");
    signer.stop().await;
}
