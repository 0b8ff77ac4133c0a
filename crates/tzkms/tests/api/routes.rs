//! Every route and every error status over real HTTP.

use tezos::{BlsScheme, Curve, PublicKey, Signature};

use crate::helpers::{assert_octez_error, vector_payload, vectors, TestSigner};

#[tokio::test]
async fn public_keys_are_served_for_every_curve() {
    let signer = TestSigner::start().await;
    for (_, pkh, pk) in &signer.keys {
        let (status, body) = signer.get(&format!("/keys/{pkh}")).await;
        assert_eq!(status, 200);
        assert_eq!(body["public_key"], pk.to_string());
    }
    signer.stop().await;
}

#[tokio::test]
async fn authorized_keys_is_an_empty_object_without_authentication() {
    let signer = TestSigner::start().await;
    let (status, body) = signer.get("/authorized_keys").await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!({}));
    signer.stop().await;
}

#[tokio::test]
async fn every_curve_signs_and_the_signature_verifies() {
    let signer = TestSigner::start_allowing(&["block", "preattestation", "attestation", "transaction"]).await;
    for (curve, pkh, pk) in &signer.keys {
        // Each key type signs the attestation tag Octez sends for it: 21 for tz1–tz3, 41 for tz4.
        let attestation = if *curve == Curve::Bls {
            "tezt-bls-mode-attestation"
        } else {
            "tezt-attestation"
        };
        let payloads = [
            vector_payload("sig-req-operation"),
            vector_payload(attestation),
            vector_payload("sig-req-block"),
        ];
        for payload in &payloads {
            let (status, body) = signer.sign(pkh, "?version=3", payload).await;
            assert_eq!(status, 200, "{curve}: {body}");
            let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
            assert_eq!(sig.curve(), Some(*curve));
            assert!(pk.verify(payload, &sig, BlsScheme::ProofOfPossession), "{curve}");
        }
    }
    signer.stop().await;
}

#[tokio::test]
async fn bls_version_selects_the_scheme() {
    let signer = TestSigner::start_allowing(&["transaction"]).await;
    let (_, pkh, pk) = signer.key(Curve::Bls).clone();
    // A generic operation: consensus payloads are watermarked, and one payload is signed once.
    let payload = vector_payload("sig-req-operation");
    for (query, scheme) in [
        ("?version=1", BlsScheme::Augmented),
        ("?version=2", BlsScheme::ProofOfPossession),
        ("?version=3", BlsScheme::ProofOfPossession),
        ("", BlsScheme::ProofOfPossession),
    ] {
        let (status, body) = signer.sign(&pkh, query, &payload).await;
        assert_eq!(status, 200, "{body}");
        let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
        assert!(pk.verify(&payload, &sig, scheme), "{query}");
        let other = match scheme {
            BlsScheme::Augmented => BlsScheme::ProofOfPossession,
            BlsScheme::ProofOfPossession => BlsScheme::Augmented,
        };
        assert!(!pk.verify(&payload, &sig, other), "{query}");
    }
    signer.stop().await;
}

#[tokio::test]
async fn version_0_with_a_tz4_key_is_refused_and_other_keys_still_sign_with_it() {
    let signer = TestSigner::start_allowing(&["transaction"]).await;
    let payload = vector_payload("sig-req-operation");
    for (curve, pkh, _) in &signer.keys {
        let (status, body) = signer.sign(pkh, "?version=0", &payload).await;
        if *curve == Curve::Bls {
            assert_eq!(status, 400, "{body}");
            assert_octez_error(
                &body,
                "signature version 0 has no BLS: a tz4 key signs with version 1",
            );
        } else {
            assert_eq!(status, 200, "{curve}: {body}");
        }
    }
    // Refused before anything was signed: the same bytes sign with a version Octez sends for tz4.
    let (_, pkh, _) = signer.key(Curve::Bls).clone();
    assert_eq!(signer.sign(&pkh, "?version=3", &payload).await.0, 200);
    signer.stop().await;
}

#[tokio::test]
async fn unknown_signature_versions_get_a_400_naming_the_known_ones() {
    let signer = TestSigner::start_allowing(&["transaction"]).await;
    let payload = vector_payload("sig-req-operation");
    for curve in [Curve::Bls, Curve::Ed25519] {
        let (_, pkh, _) = signer.key(curve).clone();
        for query in ["?version=4", "?version=abc", "?version=", "?version=-1"] {
            let (status, body) = signer.sign(&pkh, query, &payload).await;
            assert_eq!(status, 400, "{curve} {query}: {body}");
            assert_octez_error(&body, "(expected 0, 1, 2 or 3)");
        }
    }
    signer.stop().await;
}

#[tokio::test]
async fn deterministic_vectors_are_reproduced_over_http() {
    let v = vectors("signatures.json");
    let wanted: Vec<_> = v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["deterministic"] == true)
        .collect();
    let secrets: Vec<tezos::SecretKey> = wanted
        .iter()
        .map(|s| s["sk"].as_str().unwrap().parse().unwrap())
        .collect();
    // The vectors sign one block under both BLS schemes: without a watermark for these keys. Their
    // 0x03 messages ("03 1234") are not operations: only generic_unchecked signs them.
    let unprotected = secrets.iter().map(|k| k.public_key().hash()).collect();
    let signer = TestSigner::start_with(&secrets, |c| {
        c.watermark.unprotected_keys = unprotected;
        c.policy.default.allow = [
            "block",
            "preattestation",
            "attestation",
            "michelson_data",
            "generic_unchecked",
        ]
        .map(|k| k.parse().unwrap())
        .to_vec();
    })
    .await;
    for s in wanted {
        let version = if s["scheme"] == "aug" {
            "?version=1"
        } else {
            "?version=3"
        };
        let message = hex::decode(s["message_hex"].as_str().unwrap()).unwrap();
        let pkh = s["pkh"].as_str().unwrap().parse().unwrap();
        let (status, body) = signer.sign(&pkh, version, &message).await;
        if message[0] == 0x05 || message[0] == 0x03 || [0x11, 0x12, 0x13].contains(&message[0]) {
            assert_eq!(status, 200, "{}: {body}", s["id"]);
            assert_eq!(body["signature"], s["signature"], "{}", s["id"]);
        } else {
            // Vectors over arbitrary bytes (e.g. "test" without a magic byte) are refused by policy.
            assert_eq!(status, 403, "{}: {body}", s["id"]);
        }
    }
    signer.stop().await;
}

#[tokio::test]
async fn octez_client_sequence_authorized_keys_then_sign_with_version() {
    let signer = TestSigner::start().await;
    let (_, pkh, pk) = signer.key(Curve::P256).clone();
    let payload = vector_payload("tezt-preattestation");
    for _ in 0..3 {
        let (status, body) = signer.get("/authorized_keys").await;
        assert_eq!((status, body), (200, serde_json::json!({})));
        let (status, body) = signer
            .sign(&pkh, "?version=3&some_future_parameter=1", &payload)
            .await;
        assert_eq!(status, 200, "{body}");
        let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
        assert!(pk.verify(&payload, &sig, BlsScheme::default()));
    }
    signer.stop().await;
}

#[tokio::test]
async fn bad_requests_get_octez_errors_and_the_server_keeps_serving() {
    let signer = TestSigner::start().await;
    let (_, pkh, _) = signer.key(Curve::Ed25519).clone();
    let p = pkh.to_string();
    let truncated = hex::encode(&vector_payload("tezt-preattestation")[..50]);
    // A consensus payload: the default policy signs it, and identical bytes are answered again.
    let probe = vector_payload("tezt-attestation");
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "malformed JSON",
            p.clone(),
            String::new(),
            400,
            "not a JSON string",
        ),
        (
            "JSON not a string",
            p.clone(),
            "{\"a\":1}".into(),
            400,
            "not a JSON string",
        ),
        ("non-hex", p.clone(), "\"03zz\"".into(), 400, "not valid hex"),
        (
            "odd-length hex",
            p.clone(),
            "\"031\"".into(),
            400,
            "not valid hex",
        ),
        (
            "empty string",
            p.clone(),
            "\"\"".into(),
            400,
            "can't sign empty data",
        ),
        (
            "truncated consensus",
            p.clone(),
            format!("\"{truncated}\""),
            400,
            "preattestation payload is 50 bytes",
        ),
        (
            "aggregate",
            p.clone(),
            format!(
                "\"{}\"",
                hex::encode(vector_payload("tezt-attestations-aggregate"))
            ),
            400,
            "tag 31",
        ),
        ("0x04", p.clone(), "\"0401\"".into(), 403, "never signed"),
        ("unknown magic", p.clone(), "\"4201\"".into(), 403, "0x42"),
        (
            "legacy block",
            p.clone(),
            "\"01aabbccdd00000001\"".into(),
            403,
            "0x01",
        ),
        (
            "malformed pkh",
            "tz1notakey".into(),
            "\"03\"".into(),
            400,
            "invalid public key hash",
        ),
        (
            "unknown pkh",
            "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx".into(),
            "\"03\"".into(),
            404,
            "not served",
        ),
    ];
    for (name, pkh_text, body, status, needle) in cases {
        let (got, json) = if name == "malformed JSON" {
            signer.post_raw(&pkh_text, "", "not json").await
        } else if body.is_empty() {
            signer.post_raw(&pkh_text, "", "").await
        } else {
            signer.post_raw(&pkh_text, "", body).await
        };
        assert_eq!(got, status, "{name}: {json}");
        assert_octez_error(&json, needle);
        let (ok, _) = signer.sign(&pkh, "", &probe).await;
        assert_eq!(ok, 200, "not serving after {name}");
    }
    let (status, json) = signer.post_raw(&p, "", "").await;
    assert_eq!(status, 400);
    assert_octez_error(&json, "empty body");
    let (status, json) = signer.post_raw(&p, "?version=7", "\"03\"").await;
    assert_eq!(status, 400);
    assert_octez_error(&json, "unsupported signature version");
    signer.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let signer = TestSigner::start().await;
    let (_, pkh, _) = signer.key(Curve::P256).clone();
    let big = format!("\"03{}\"", "ab".repeat(100_000));
    let (status, json) = signer.post_raw(&pkh.to_string(), "", big.clone()).await;
    assert_eq!(status, 413);
    assert_octez_error(&json, "larger than 65536 bytes");
    // Without a Content-Length (chunked), the limit still applies while reading.
    let stream = futures_stream(big.into_bytes());
    let (status, json) = signer
        .post_raw(&pkh.to_string(), "", reqwest::Body::wrap_stream(stream))
        .await;
    assert_eq!(status, 413);
    assert_octez_error(&json, "larger than");
    let (ok, _) = signer.sign(&pkh, "", &vector_payload("tezt-attestation")).await;
    assert_eq!(ok, 200);
    signer.stop().await;
}

fn futures_stream(bytes: Vec<u8>) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    struct Chunks(Vec<Vec<u8>>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(if self.0.is_empty() {
                None
            } else {
                Some(Ok(self.0.remove(0)))
            })
        }
    }
    Chunks(bytes.chunks(8192).map(<[u8]>::to_vec).collect())
}

#[tokio::test]
async fn unknown_routes_and_methods_get_octez_errors() {
    let signer = TestSigner::start().await;
    let (status, json) = signer.get("/nope").await;
    assert_eq!(status, 404);
    assert_octez_error(&json, "no such route");
    let response = signer
        .client
        .delete(signer.url("/authorized_keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_octez_error(&response.json().await.unwrap(), "method not allowed");
    let (status, _) = signer.get("/keys/tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx").await;
    assert_eq!(status, 404);
    signer.stop().await;
}

#[tokio::test]
async fn allowed_magic_bytes_restrict_what_is_signed() {
    let secrets = [tezos::SecretKey::generate(Curve::P256)];
    let signer = TestSigner::start_with(&secrets, |c| {
        c.policy.allowed_magic_bytes = [0x11, 0x12, 0x13].into();
    })
    .await;
    let (_, pkh, pk) = signer.key(Curve::P256).clone();
    let (status, json) = signer.sign(&pkh, "", &vector_payload("sig-req-operation")).await;
    assert_eq!(status, 403);
    assert_octez_error(&json, "magic byte 0x03 (generic operation) not allowed");
    let payload = vector_payload("tezt-attestation");
    let (status, json) = signer.sign(&pkh, "", &payload).await;
    assert_eq!(status, 200);
    let sig: Signature = json["signature"].as_str().unwrap().parse().unwrap();
    assert!(PublicKey::verify(&pk, &payload, &sig, BlsScheme::default()));
    signer.stop().await;
}
