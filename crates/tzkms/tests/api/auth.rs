//! Authentication of signing requests over HTTP, with the shared vector and keys made here.

use tezos::{BlsScheme, Curve, PublicKeyHash, SecretKey, Signature};
use tzkms::auth::authenticated_bytes;

use crate::helpers::{assert_octez_error, vectors, TestSigner};

struct Vector {
    signer_sk: SecretKey,
    authorized_pk: String,
    authorized_pkh: String,
    data: Vec<u8>,
    query: String,
}

fn vector() -> Vector {
    let v = &vectors("signatures.json")["authentication"][0];
    let keys = vectors("keys.json");
    let signer_pkh = v["signer_pkh"].as_str().unwrap();
    let sk = keys["well_known_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["pkh"] == signer_pkh)
        .unwrap()["sk"]
        .as_str()
        .unwrap();
    Vector {
        signer_sk: sk.parse().unwrap(),
        authorized_pk: v["authorized_key"]["pk"].as_str().unwrap().into(),
        authorized_pkh: v["authorized_key"]["pkh"].as_str().unwrap().into(),
        data: hex::decode(v["data_hex"].as_str().unwrap()).unwrap(),
        query: format!(
            "?authentication={}&version={}",
            v["request"]["query"]["authentication"].as_str().unwrap(),
            v["request"]["query"]["version"].as_str().unwrap()
        ),
    }
}

async fn start(v: &Vector, tweak: impl FnOnce(&mut tzkms::config::Config)) -> TestSigner {
    let pk = v.authorized_pk.parse().unwrap();
    TestSigner::start_with(std::slice::from_ref(&v.signer_sk), |c| {
        c.auth.required = true;
        c.auth.authorized_keys = vec![pk];
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn the_shared_vector_request_is_signed_and_authorized_keys_are_listed() {
    let v = vector();
    let signer = start(&v, |_| {}).await;
    let (status, body) = signer.get("/authorized_keys").await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({ "authorized_keys": [v.authorized_pkh] }));
    let pkh = v.signer_sk.public_key().hash();
    let (status, body) = signer.sign(&pkh, &v.query, &v.data).await;
    assert_eq!(status, 200, "{body}");
    let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
    assert!(v
        .signer_sk
        .public_key()
        .verify(&v.data, &sig, BlsScheme::default()));
    signer.stop().await;
}

#[tokio::test]
async fn missing_authentication_is_401_and_bad_authentication_is_403() {
    let v = vector();
    let signer = start(&v, |_| {}).await;
    let pkh = v.signer_sk.public_key().hash();

    let (status, body) = signer.sign(&pkh, "?version=2", &v.data).await;
    assert_eq!(status, 401, "{body}");
    assert_octez_error(&body, "authentication required");

    let mut other_data = v.data.clone();
    *other_data.last_mut().unwrap() ^= 1;
    let (status, body) = signer.sign(&pkh, &v.query, &other_data).await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(&body, "does not verify against any authorized key");

    let sig: Signature = v.query.split(['=', '&']).nth(1).unwrap().parse().unwrap();
    let mut bytes: [u8; 64] = sig.as_bytes().try_into().unwrap();
    bytes[10] ^= 1;
    let altered = Signature::Ed25519(bytes);
    let (status, body) = signer
        .sign(&pkh, &format!("?authentication={altered}&version=2"), &v.data)
        .await;
    assert_eq!(status, 403, "{body}");

    let (status, body) = signer
        .sign(&pkh, "?authentication=edsigNotASignature&version=2", &v.data)
        .await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(&body, "is not a signature");

    // A signature by a key that is not authorized.
    let intruder = SecretKey::generate(Curve::P256);
    let forged = intruder
        .sign(&authenticated_bytes(&pkh, &v.data), BlsScheme::default())
        .unwrap();
    let (status, body) = signer
        .sign(&pkh, &format!("?authentication={forged}&version=2"), &v.data)
        .await;
    assert_eq!(status, 403, "{body}");

    // None of these reached the watermark: the vector request still signs.
    let (status, body) = signer.sign(&pkh, &v.query, &v.data).await;
    assert_eq!(status, 200, "{body}");

    // The metrics count all five refusals as unauthenticated, under the key they asked for.
    let m = signer.metrics().await;
    let unauthenticated: u64 = m
        .lines()
        .filter(|l| {
            l.starts_with("tzkms_requests_total{route=\"sign\"")
                && l.contains(&format!("key=\"{pkh}\""))
                && l.contains("outcome=\"unauthenticated\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(unauthenticated, 5, "{m}");
    signer.stop().await;
}

#[tokio::test]
async fn every_curve_can_be_an_authentication_key() {
    let v = vector();
    let auth_keys: Vec<SecretKey> = Curve::ALL.into_iter().map(SecretKey::generate).collect();
    let pks = auth_keys.iter().map(|k| k.public_key().clone()).collect();
    let signer = TestSigner::start_with(std::slice::from_ref(&v.signer_sk), |c| {
        c.auth.required = true;
        c.auth.authorized_keys = pks;
        c.watermark.unprotected_keys = vec![v.signer_sk.public_key().hash()];
    })
    .await;
    let pkh = v.signer_sk.public_key().hash();
    for key in &auth_keys {
        let auth = key
            .sign(&authenticated_bytes(&pkh, &v.data), BlsScheme::ProofOfPossession)
            .unwrap();
        let (status, body) = signer
            .sign(&pkh, &format!("?authentication={auth}&version=3"), &v.data)
            .await;
        assert_eq!(status, 200, "{}: {body}", key.curve());
    }
    signer.stop().await;
}

#[tokio::test]
async fn a_bound_authorized_key_may_only_ask_for_its_keys() {
    let v = vector();
    let bound_to: PublicKeyHash = SecretKey::generate(Curve::Ed25519).public_key().hash();
    let auth_pkh: PublicKeyHash = v.authorized_pkh.parse().unwrap();
    let signer = start(&v, |c| {
        c.auth
            .may_sign
            .insert(auth_pkh, tzkms::config::KeyList(vec![bound_to]));
    })
    .await;
    let pkh = v.signer_sk.public_key().hash();
    let (status, body) = signer.sign(&pkh, &v.query, &v.data).await;
    assert_eq!(status, 403, "{body}");
    assert_octez_error(&body, "may not ask for signatures by");
    signer.stop().await;
}

#[tokio::test]
async fn without_required_authentication_a_signature_is_ignored() {
    let v = vector();
    let signer = TestSigner::start_with(std::slice::from_ref(&v.signer_sk), |_| {}).await;
    let (status, body) = signer.get("/authorized_keys").await;
    assert_eq!((status, body), (200, serde_json::json!({})));
    let pkh = v.signer_sk.public_key().hash();
    let (status, _) = signer
        .sign(&pkh, "?authentication=edsigNotASignature&version=2", &v.data)
        .await;
    assert_eq!(status, 200);
    signer.stop().await;
}
