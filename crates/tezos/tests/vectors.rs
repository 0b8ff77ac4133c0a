//! Every vector in `../shared/vectors/` against this crate: keys, payloads, signatures, encrypted keys,
//! BLS proofs of possession and the authentication example.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::Value;
use tezos::payload::ConsensusOperation;
use tezos::{
    base58, blake2b_256, classify, BlsScheme, Curve, Payload, PublicKey, PublicKeyHash, SecretKey, Signature,
};

fn load(name: &str) -> Value {
    let path = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../../../shared/vectors")
    .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn arr(v: &Value) -> &Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
}

fn curve_of(name: &str) -> Curve {
    name.parse().unwrap()
}

fn check_key_triplet(sk: &str, pk: &str, pkh: &str) {
    let secret: SecretKey = sk.parse().unwrap_or_else(|e| panic!("{sk}: {e}"));
    assert_eq!(secret.public_key().to_string(), pk, "pk of {sk}");
    let public: PublicKey = pk.parse().unwrap();
    assert_eq!(public.hash().to_string(), pkh, "pkh of {pk}");
    let parsed: PublicKeyHash = pkh.parse().unwrap();
    assert_eq!(parsed, public.hash());
}

#[test]
fn prefix_table_matches_the_vectors() {
    let keys = load("keys.json");
    for p in arr(&keys["prefixes"]) {
        let hex_prefix = s(&p["prefix_hex"]);
        let len = p["payload_length"].as_u64().unwrap() as usize;
        let text_prefix = s(&p["text_prefix"]);
        let ours = base58::ALL
            .iter()
            .find(|q| hex::encode(q.bytes) == hex_prefix)
            .unwrap_or_else(|| panic!("missing prefix {hex_prefix}"));
        assert_eq!(ours.payload_len, len, "{text_prefix}");
        let zero = base58::encode(*ours, &vec![0; len]);
        let ff = base58::encode(*ours, &vec![0xff; len]);
        assert!(zero.starts_with(s(&p["min_text"])), "{zero}");
        assert!(ff.starts_with(s(&p["max_text"])), "{ff}");
        assert_eq!(zero.len() as u64, p["b58_length"].as_u64().unwrap());
    }
}

#[test]
fn octez_key_encodings_derive_sk_to_pk_to_pkh() {
    let keys = load("keys.json");
    let mut n = 0;
    for (curve, list) in keys["octez_key_encodings"]["keys"].as_object().unwrap() {
        for v in arr(list) {
            check_key_triplet(s(&v["sk"]), s(&v["pk"]), s(&v["pkh"]));
            let pkh: PublicKeyHash = s(&v["pkh"]).parse().unwrap();
            assert_eq!(hex::encode(pkh.hash()), s(&v["pkh_hex"]));
            assert_eq!(pkh.curve(), curve_of(curve));
            if curve != "bls" {
                // For ed25519 the seed is the edsk payload; for ECDSA the big-endian scalar.
                let sk = SecretKey::from_raw(curve_of(curve), &hex::decode(s(&v["seed"])).unwrap()).unwrap();
                assert_eq!(sk.public_key().to_string(), s(&v["pk"]));
            }
            n += 1;
        }
    }
    assert_eq!(n, 400);
}

#[test]
fn octez_pkh_encodings_round_trip() {
    let keys = load("keys.json");
    for (curve, list) in keys["octez_pkh_encodings"]["pkhs"].as_object().unwrap() {
        for v in arr(list) {
            let hash: [u8; 20] = hex::decode(s(&v["pkh_hex"])).unwrap().try_into().unwrap();
            let pkh = PublicKeyHash::new(curve_of(curve), hash);
            assert_eq!(pkh.to_string(), s(&v["pkh"]));
            assert_eq!(s(&v["pkh"]).parse::<PublicKeyHash>().unwrap(), pkh);
        }
    }
}

#[test]
fn well_known_and_library_keys_derive_and_have_the_published_binary_forms() {
    let keys = load("keys.json");
    for v in arr(&keys["well_known_keys"]) {
        check_key_triplet(s(&v["sk"]), s(&v["pk"]), s(&v["pkh"]));
        let sk: SecretKey = s(&v["sk"]).parse().unwrap();
        assert_eq!(hex::encode(sk.to_raw().as_ref()), s(&v["sk_hex"]), "{}", v["id"]);
        assert_eq!(hex::encode(sk.public_key().as_bytes()), s(&v["pk_hex"]));
        let pkh: PublicKeyHash = s(&v["pkh"]).parse().unwrap();
        assert_eq!(hex::encode(pkh.to_binary()), s(&v["pkh_binary_hex"]));
    }
    for v in arr(&keys["other_keys"]) {
        check_key_triplet(s(&v["sk"]), s(&v["pk"]), s(&v["pkh"]));
        if let Some(sk64) = v.get("sk_64").and_then(Value::as_str) {
            check_key_triplet(sk64, s(&v["pk"]), s(&v["pkh"]));
        }
    }
}

#[test]
fn chain_ids_round_trip() {
    let keys = load("keys.json");
    for v in arr(&keys["chain_ids"]) {
        let id: tezos::ChainId = s(&v["b58"]).parse().unwrap();
        assert_eq!(hex::encode(id.0), s(&v["hex"]));
        assert_eq!(id.to_string(), s(&v["b58"]));
    }
}

#[test]
fn payloads_are_classified_as_expected() {
    let payloads = load("payloads.json");
    for p in arr(&payloads["payloads"]) {
        let id = s(&p["id"]);
        let e = &p["expected"];
        let bytes = hex::decode(s(&p["hex"])).unwrap();
        assert_eq!(hex::encode(blake2b_256(&bytes)), s(&e["blake2b_256"]), "{id}");
        assert_eq!(
            base58::encode(base58::PAYLOAD_HASH, &blake2b_256(&bytes)),
            s(&e["hash_vh"])
        );
        let result = classify(&bytes);
        if !e["accept"].as_bool().unwrap() {
            assert!(result.is_err(), "{id} must be refused, got {result:?}");
            continue;
        }
        let payload = result.unwrap_or_else(|err| panic!("{id}: {err}"));
        match s(&e["kind"]) {
            "generic" => assert_eq!(payload, Payload::GenericOperation, "{id}"),
            kind => {
                let Payload::Consensus(c) = payload else {
                    panic!("{id}: {payload:?}")
                };
                assert_eq!(c.kind.name(), kind, "{id}");
                assert_eq!(c.chain_id.to_string(), s(&e["chain_id"]), "{id}");
                assert_eq!(u64::from(c.level.0), e["level"].as_u64().unwrap(), "{id}");
                assert_eq!(u64::from(c.round.0), e["round"].as_u64().unwrap(), "{id}");
                if let Some(op) = e.get("operation").and_then(Value::as_str) {
                    assert_eq!(c.operation.name(), op, "{id}");
                }
                if let Some(tag) = e.get("tag").and_then(Value::as_u64) {
                    assert_eq!(u64::from(bytes[37]), tag, "{id}");
                }
                if let Some(slot) = e.get("slot").and_then(Value::as_u64) {
                    let got = match c.operation {
                        ConsensusOperation::Preattestation { slot }
                        | ConsensusOperation::Attestation { slot }
                        | ConsensusOperation::AttestationWithDal { slot } => slot,
                        other => panic!("{id}: {other:?} has no slot"),
                    };
                    assert_eq!(u64::from(got), slot, "{id}");
                }
            }
        }
    }
}

#[test]
fn watermark_sequence_payloads_classify_to_their_kind() {
    let payloads = load("payloads.json");
    for seq in arr(&payloads["watermark_sequences"]) {
        for step in arr(&seq["steps"]) {
            let bytes = hex::decode(s(&step["hex"])).unwrap();
            assert_eq!(hex::encode(blake2b_256(&bytes)), s(&step["blake2b_256"]));
            assert!(
                matches!(classify(&bytes), Ok(Payload::Consensus(_))),
                "{}",
                step["note"]
            );
        }
    }
}

fn scheme_of(v: &Value) -> BlsScheme {
    match v.get("scheme").and_then(Value::as_str) {
        Some("aug") => BlsScheme::Augmented,
        _ => BlsScheme::ProofOfPossession,
    }
}

#[test]
fn signature_vectors_verify_and_deterministic_ones_reproduce() {
    let sigs = load("signatures.json");
    let mut reproduced = 0;
    let mut p256_reproduced = 0;
    for v in arr(&sigs["signatures"]) {
        let id = s(&v["id"]);
        let msg = hex::decode(s(&v["message_hex"])).unwrap();
        if let Some(d) = v["digest_hex"].as_str() {
            assert_eq!(hex::encode(blake2b_256(&msg)), d, "{id}");
        }
        check_key_triplet(s(&v["sk"]), s(&v["pk"]), s(&v["pkh"]));
        let pk: PublicKey = s(&v["pk"]).parse().unwrap();
        let scheme = scheme_of(v);
        let typed: Signature = s(&v["signature"]).parse().unwrap();
        assert_eq!(hex::encode(typed.as_bytes()), s(&v["signature_hex"]), "{id}");
        assert_eq!(typed.to_string(), s(&v["signature"]));
        assert!(
            pk.verify(&msg, &typed, scheme),
            "{id}: typed signature does not verify"
        );
        if let Some(generic) = v["signature_generic"].as_str() {
            let g: Signature = generic.parse().unwrap();
            assert!(
                pk.verify(&msg, &g, scheme),
                "{id}: generic signature does not verify"
            );
            assert_eq!(typed.to_generic_b58(), generic);
        }
        let wrong_scheme = match scheme {
            BlsScheme::Augmented => BlsScheme::ProofOfPossession,
            BlsScheme::ProofOfPossession => BlsScheme::Augmented,
        };
        if pk.curve() == Curve::Bls {
            assert!(
                !pk.verify(&msg, &typed, wrong_scheme),
                "{id}: verifies under the other scheme"
            );
        }
        let mut tampered = msg.clone();
        tampered.push(0);
        assert!(
            !pk.verify(&tampered, &typed, scheme),
            "{id}: verifies a different message"
        );

        let sk: SecretKey = s(&v["sk"]).parse().unwrap();
        let ours = sk.sign(&msg, scheme).unwrap();
        assert!(
            pk.verify(&msg, &ours, scheme),
            "{id}: our signature does not verify"
        );
        // sign is RFC 6979 + low-S on both ECDSA curves, so it reproduces every vector made that way,
        // P-256 included.
        let must_reproduce =
            v["deterministic"].as_bool().unwrap() || v["rfc6979_low_s"].as_bool() == Some(true);
        if must_reproduce {
            assert_eq!(ours.to_string(), s(&v["signature"]), "{id}: not reproduced");
            if pk.curve() == Curve::P256 {
                p256_reproduced += 1;
            }
            reproduced += 1;
        }
    }
    assert!(reproduced >= 14, "only {reproduced} signatures reproduced");
    assert!(
        p256_reproduced >= 5,
        "only {p256_reproduced} P-256 signatures reproduced"
    );
}

#[test]
fn high_s_secp256k1_signatures_are_rejected() {
    let sigs = load("signatures.json");
    let v = arr(&sigs["signatures"])
        .iter()
        .find(|v| v["curve"] == "secp256k1")
        .unwrap();
    let pk: PublicKey = s(&v["pk"]).parse().unwrap();
    let msg = hex::decode(s(&v["message_hex"])).unwrap();
    let sig = k256::ecdsa::Signature::from_slice(&hex::decode(s(&v["signature_hex"])).unwrap()).unwrap();
    let (r, low_s) = sig.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r, -*low_s).unwrap();
    let high = Signature::Secp256k1(high.to_bytes().into());
    assert!(!pk.verify(&msg, &high, BlsScheme::default()));
}

#[test]
fn encrypted_keys_decrypt_with_their_password() {
    let sigs = load("signatures.json");
    for v in arr(&sigs["encrypted_keys"]) {
        let esk = s(&v["esk"]);
        assert!(tezos::encrypted::is_encrypted(esk));
        let sk = tezos::encrypted::decrypt(esk, s(&v["password"]).as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", v["id"]));
        assert_eq!(sk.to_b58().as_str(), s(&v["sk"]), "{}", v["id"]);
        assert_eq!(sk.public_key().to_string(), s(&v["pk"]));
        assert!(tezos::encrypted::decrypt(esk, b"not the password").is_err());
        let raw = base58::decode_any(esk).unwrap().1;
        assert_eq!(hex::encode(&raw[..8]), s(&v["salt_hex"]));
        assert!(matches!(
            esk.parse::<SecretKey>(),
            Err(tezos::KeyError::Encrypted)
        ));
    }
}

#[test]
fn bls_proofs_of_possession_reproduce() {
    let sigs = load("signatures.json");
    for v in arr(&sigs["bls_proofs_of_possession"]) {
        let sk: SecretKey = s(&v["sk"]).parse().unwrap();
        assert_eq!(sk.public_key().to_string(), s(&v["pk"]));
        let override_pk: Option<PublicKey> = v["override_pk"].as_str().map(|p| p.parse().unwrap());
        let proof = sk.bls_prove_possession(override_pk.as_ref()).unwrap();
        assert_eq!(proof.to_string(), s(&v["proof"]), "{}", v["id"]);
        let proven = override_pk.as_ref().unwrap_or(sk.public_key());
        assert!(tezos::signature::verify_bls_proof_of_possession(
            sk.public_key(),
            proven,
            &proof
        ));
    }
}

#[test]
fn authentication_example_verifies_over_04_01_pkh_data() {
    let sigs = load("signatures.json");
    for v in arr(&sigs["authentication"]) {
        let signer: PublicKeyHash = s(&v["signer_pkh"]).parse().unwrap();
        assert_eq!(hex::encode(signer.to_binary()), s(&v["signer_pkh_binary_hex"]));
        let data = hex::decode(s(&v["data_hex"])).unwrap();
        let mut bytes = vec![0x04, 0x01];
        bytes.extend_from_slice(&signer.to_binary());
        bytes.extend_from_slice(&data);
        assert_eq!(hex::encode(&bytes), s(&v["auth_bytes_hex"]));
        let pk: PublicKey = s(&v["authorized_key"]["pk"]).parse().unwrap();
        let sig: Signature = s(&v["signature"]).parse().unwrap();
        assert!(pk.verify(&bytes, &sig, BlsScheme::default()));
        bytes[30] ^= 1;
        assert!(!pk.verify(&bytes, &sig, BlsScheme::default()));
    }
}
