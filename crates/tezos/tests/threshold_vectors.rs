//! Threshold BLS against known answers computed by an independent implementation (py_ecc, through
//! tests/e2e/signer/threshold_vectors.py): Octez has no fixed threshold vectors (its tests draw random
//! keys; tezos/tezos-mirror d26a8bef82159434e5a6db6a6d329f29dc8172dd). A 3-of-5 split in Octez's JSON,
//! each share's partial signature under POP and AUG, and combinations of three subsets.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use tezos::threshold::{self, ShareId, ShareSet};
use tezos::{BlsScheme, PublicKey, Signature};

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/threshold_py_ecc.json")).unwrap()
}

fn ids(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u8)
        .collect()
}

#[test]
fn py_ecc_share_json_parses_and_its_share_keys_agree() {
    let v = vectors();
    let set: ShareSet = serde_json::from_value(v["octez_json"].clone()).unwrap();
    assert_eq!(set.threshold(), 3);
    assert_eq!(set.share_count(), 5);
    assert_eq!(set.public_key().to_string(), v["octez_json"]["public_key"]);
    assert_eq!(
        set.public_key_hash().to_string(),
        v["octez_json"]["public_key_hash"]
    );
    let expected: Vec<(ShareId, PublicKey)> = v["share_public_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let id = ShareId::new(s["id"].as_u64().unwrap() as u8).unwrap();
            (id, s["public_key"].as_str().unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(set.share_public_keys(), expected);
    threshold::check_share_keys(set.public_key(), &expected, 3).unwrap();
    // Serializing gives back the same JSON (ids, keys, proof: Octez's fields and forms).
    assert_eq!(serde_json::to_value(&set).unwrap(), v["octez_json"]);
}

#[test]
fn partial_and_combined_signatures_match_py_ecc() {
    let v = vectors();
    let set: ShareSet = serde_json::from_value(v["octez_json"].clone()).unwrap();
    let group = set.public_key();
    let message = hex::decode(v["message"].as_str().unwrap()).unwrap();
    for (name, scheme) in [
        ("pop", BlsScheme::ProofOfPossession),
        ("aug", BlsScheme::Augmented),
    ] {
        let s = &v["schemes"][name];
        let mut partials = Vec::new();
        for p in s["partials"].as_array().unwrap() {
            let id = ShareId::new(p["id"].as_u64().unwrap() as u8).unwrap();
            let sig: Signature = p["signature"].as_str().unwrap().parse().unwrap();
            let share = set.share(id).unwrap();
            assert_eq!(
                share.sign_partial(group, &message, scheme),
                sig,
                "{name} share {id}"
            );
            assert!(threshold::verify_partial(
                &share.public_key(),
                group,
                &message,
                scheme,
                &sig
            ));
            partials.push((id, sig));
        }
        let group_sig: Signature = s["group_signature"].as_str().unwrap().parse().unwrap();
        assert!(group.verify(&message, &group_sig, scheme), "{name}");
        for c in s["combined"].as_array().unwrap() {
            let chosen: Vec<(ShareId, Signature)> = ids(&c["ids"])
                .into_iter()
                .map(|i| *partials.iter().find(|(id, _)| id.get() == i).unwrap())
                .collect();
            let expected: Signature = c["signature"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                threshold::combine(&chosen, 3).unwrap(),
                expected,
                "{name} {:?}",
                c["ids"]
            );
            assert_eq!(expected, group_sig);
        }
    }
}
