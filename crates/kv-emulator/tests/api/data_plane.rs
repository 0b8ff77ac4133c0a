//! Keys data plane: every route, its JSON shape, and Azure's error codes.

use crate::{b64, kid_path, unb64, TestVault, API};
use kv_emulator::{Config, Curve, Emulator, Flavour, Operation};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn is_version(v: &str) -> bool {
    v.len() == 32
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn unauthenticated_request_gets_the_vault_challenge_before_the_body_is_read() {
    let t = TestVault::start().await;
    let url = t.url("/keys/k/create");
    let r = t
        .send(Method::POST, &url, None, Some(json!({"garbage": true})))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.error_code(), "Unauthorized");
    let expected = format!(
        "Bearer authorization=\"https://login.windows.net/{}\", resource=\"https://vault.azure.net\"",
        t.emu.tenant_id()
    );
    assert_eq!(r.header("www-authenticate"), Some(expected.as_str()));
    assert_eq!(t.emu.challenge(), expected);
    assert!(r.header("x-ms-request-id").is_some());
}

#[tokio::test]
async fn api_version_is_required_and_checked() {
    let t = TestVault::start().await;
    t.create("k", "P-256").await;
    let base = format!("{}/keys/k", t.emu.url());
    let missing = t.send(Method::GET, &base, Some(&t.token), None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.error_code(), "BadParameter");
    // Versions the keys API never had are refused as Key Vault refuses them: 400 BadParameter naming it.
    for unknown in ["7.7", "6.0", "2025-07-02", "2025-07-01-preview", "latest"] {
        let r = t
            .send(
                Method::GET,
                &format!("{base}?api-version={unknown}"),
                Some(&t.token),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "api-version {unknown}");
        assert_eq!(r.error_code(), "BadParameter", "api-version {unknown}");
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("({unknown}) is not recognized")),
            "{message}"
        );
    }
    // Every documented version, stable and preview, is accepted.
    for v in kv_emulator::API_VERSIONS {
        let ok = t
            .send(
                Method::GET,
                &format!("{base}?api-version={v}"),
                Some(&t.token),
                None,
            )
            .await;
        assert_eq!(ok.status, StatusCode::OK, "api-version {v}");
    }
    for documented in [
        "2016-10-01",
        "7.0",
        "7.3",
        "2025-07-01",
        "2026-04-01",
        "7.6-preview.2",
    ] {
        assert!(kv_emulator::API_VERSIONS.contains(&documented), "{documented}");
    }
}

#[tokio::test]
async fn api_version_7_0_signs_as_older_clients_send_it() {
    // The node.js signer and signatory pin api-version 7.0; Key Vault still answers it.
    let t = TestVault::start().await;
    let key = t.create("old-client", "P-256K").await;
    let kid = key["key"]["kid"].as_str().unwrap().to_owned();
    let digest = [7u8; 32];
    let r = t
        .send(
            Method::POST,
            &format!("{kid}/sign?api-version=7.0"),
            Some(&t.token),
            Some(json!({ "alg": "ES256K", "value": b64(&digest) })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let signature = unb64(r.body["value"].as_str().unwrap());
    assert_eq!(signature.len(), 64);
    let version = kid.rsplit('/').next().unwrap();
    assert!(t.emu.verify("old-client", Some(version), &digest, &signature));
}

#[tokio::test]
async fn create_returns_a_key_bundle_with_versioned_kid_and_unpadded_coordinates() {
    let t = TestVault::start().await;
    let r = t
        .call(
            Method::POST,
            "/keys/baker1/create",
            Some(json!({"kty":"EC-HSM","crv":"P-256K","key_ops":["sign","verify"],
                         "attributes":{"enabled":true},"tags":{"role":"baking"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let key = &r.body["key"];
    let kid = key["kid"].as_str().expect("kid");
    let prefix = format!("{}/keys/baker1/", t.emu.url());
    assert!(kid.starts_with(&prefix), "{kid}");
    assert!(is_version(&kid[prefix.len()..]));
    assert_eq!(key["kty"], "EC-HSM");
    assert_eq!(key["crv"], "P-256K");
    assert_eq!(key["key_ops"], json!(["sign", "verify"]));
    let x = key["x"].as_str().expect("x");
    assert_eq!(x.len(), 43);
    assert!(!x.contains('='));
    assert_eq!(unb64(key["y"].as_str().expect("y")).len(), 32);
    assert!(key.get("d").is_none());
    let attrs = &r.body["attributes"];
    assert_eq!(attrs["enabled"], true);
    assert!(attrs["created"].is_i64() && attrs["updated"].is_i64());
    assert_eq!(attrs["recoveryLevel"], "Recoverable+Purgeable");
    assert_eq!(attrs["recoverableDays"], 90);
    assert_eq!(r.body["tags"], json!({"role":"baking"}));
}

#[tokio::test]
async fn create_validates_kty_crv_name_and_body() {
    let t = TestVault::start().await;
    let cases = [
        ("/keys/k/create", json!({"kty":"RSA","key_size":1024})),
        ("/keys/k/create", json!({"kty":"oct-HSM"})),
        ("/keys/k/create", json!({"kty":"DSA"})),
        ("/keys/k/create", json!({"kty":"EC","crv":"P-384"})),
        ("/keys/k/create", json!({"crv":"P-256"})),
        ("/keys/k/create", json!({"kty":"EC","key_ops":["fly"]})),
        ("/keys/bad_name/create", json!({"kty":"EC"})),
    ];
    for (path, body) in cases {
        let r = t.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(r.error_code(), "BadParameter");
    }
    let r = t
        .send(Method::POST, &t.url("/keys/k/create"), Some(&t.token), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let legacy = t.create("legacy", "SECP256K1").await;
    assert_eq!(legacy["key"]["crv"], "P-256K");
    let software = t
        .call(Method::POST, "/keys/soft/create", Some(json!({"kty":"EC"})))
        .await;
    assert_eq!(software.body["key"]["kty"], "EC");
    assert_eq!(software.body["key"]["crv"], "P-256");
}

#[tokio::test]
async fn import_accepts_hsm_in_either_case_and_checks_the_public_half() {
    let t = TestVault::start().await;
    let d = [0x11u8; 32];
    let reference = t
        .emu
        .import_key("reference", Curve::P256K, &d)
        .expect("direct import");
    for (name, flag) in [("upper", "Hsm"), ("lower", "hsm")] {
        let mut body = json!({"key":{"kty":"EC","crv":"P-256K","d":b64(&d),"key_ops":["sign","verify"]}});
        body[flag] = json!(true);
        let r = t.call(Method::PUT, &format!("/keys/{name}"), Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["key"]["kty"], "EC-HSM");
        assert_eq!(unb64(r.body["key"]["x"].as_str().expect("x")), reference.x);
        assert!(r.body["key"].get("d").is_none());
    }
    let padded = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE.encode(d)
    };
    let r = t
        .call(
            Method::PUT,
            "/keys/padded",
            Some(json!({"key":{"kty":"EC-HSM","crv":"P-256K","d":padded}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let wrong_x = json!({"key":{"kty":"EC","crv":"P-256K","d":b64(&d),"x":b64(&[1u8;32])}});
    assert_eq!(
        t.call(Method::PUT, "/keys/bad", Some(wrong_x)).await.status,
        StatusCode::BAD_REQUEST
    );
    let no_d = json!({"key":{"kty":"EC","crv":"P-256","x":b64(&reference.x),"y":b64(&reference.y)}});
    assert_eq!(
        t.call(Method::PUT, "/keys/bad", Some(no_d)).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn get_latest_or_specific_version_and_names_are_case_insensitive() {
    let t = TestVault::start().await;
    let v1 = t.create("Rotating", "P-256").await;
    let v2 = t.create("rotating", "P-256").await;
    let kid1 = v1["key"]["kid"].as_str().expect("kid");
    let kid2 = v2["key"]["kid"].as_str().expect("kid");
    assert_ne!(kid1, kid2);
    assert!(
        kid2.contains("/keys/Rotating/"),
        "name keeps its first spelling: {kid2}"
    );
    for path in ["/keys/rotating", "/keys/ROTATING/", "/keys/rotating/"] {
        let r = t.call(Method::GET, path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.body["key"]["kid"], kid2, "{path}");
    }
    let r = t.call(Method::GET, &kid_path(kid1), None).await;
    assert_eq!(r.body["key"]["kid"], kid1);
    let missing = t
        .call(
            Method::GET,
            "/keys/rotating/00000000000000000000000000000000",
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "KeyNotFound");
    let unknown = t.call(Method::GET, "/keys/nope", None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "KeyNotFound");
}

#[tokio::test]
async fn list_keys_and_versions_page_with_maxresults_and_next_link() {
    let t = TestVault::start().await;
    for i in 0..5 {
        t.create(&format!("k{i}"), "P-256").await;
    }
    t.create("k0", "P-256").await;
    t.create("k0", "P-256").await;

    let mut url = t.url("/keys?maxresults=2");
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let r = t.send(Method::GET, &url, Some(&t.token), None).await;
        assert_eq!(r.status, StatusCode::OK);
        pages += 1;
        for item in r.body["value"].as_array().expect("value") {
            let kid = item["kid"].as_str().expect("kid");
            assert!(item.get("key").is_none(), "KeyItem has no key");
            assert!(item["attributes"]["enabled"].is_boolean());
            names.push(kid.rsplit('/').next().expect("name").to_owned());
        }
        match r.body["nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(t.emu.url()));
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["k0", "k1", "k2", "k3", "k4"]);

    let r = t.call(Method::GET, "/keys/k0/versions?maxresults=25", None).await;
    let versions = r.body["value"].as_array().expect("value");
    assert_eq!(versions.len(), 3);
    assert!(versions
        .iter()
        .all(|v| is_version(v["kid"].as_str().expect("kid").rsplit('/').next().expect("v"))));
    assert!(r.body["nextLink"].is_null());

    for bad in ["/keys?maxresults=26", "/keys?maxresults=0", "/keys?maxresults=x"] {
        assert_eq!(
            t.call(Method::GET, bad, None).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    assert_eq!(
        t.call(Method::GET, "/keys/none/versions", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn sign_returns_raw_r_s_that_verifies_and_differs_each_time() {
    let t = TestVault::start().await;
    for (name, crv, alg, curve) in [
        ("p", "P-256", "ES256", Curve::P256),
        ("k", "P-256K", "ES256K", Curve::P256K),
    ] {
        let bundle = t.create(name, crv).await;
        let kid = bundle["key"]["kid"].as_str().expect("kid");
        let digest = [0x42u8; 32];
        let a = t.sign(&kid_path(kid), alg, &digest).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert_eq!(a.body["kid"], kid);
        let sig_a = unb64(a.body["value"].as_str().expect("value"));
        assert_eq!(sig_a.len(), 64);
        assert_eq!(a.body["value"].as_str().map(str::len), Some(86));
        let b = t.sign(&format!("/keys/{name}/"), alg, &digest).await;
        let sig_b = unb64(b.body["value"].as_str().expect("value"));
        assert_ne!(sig_a, sig_b);
        assert!(t.emu.verify(name, None, &digest, &sig_a));
        assert!(t.emu.verify(name, None, &digest, &sig_b));
        let latest = t.sign(&format!("/keys/{name}"), alg, &digest).await;
        assert_eq!(latest.status, StatusCode::OK);
        let _ = curve;
    }
    assert_eq!(t.emu.counters().get(Operation::Sign), 6);
}

#[tokio::test]
async fn sign_checks_algorithm_digest_length_and_encoding() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    let mismatch = t.sign("/keys/k", "ES256", &[0u8; 32]).await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert_eq!(mismatch.error_code(), "BadParameter");
    let short = t.sign("/keys/k", "ES256K", &[0u8; 31]).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("Invalid length of 'value': 31 bytes")));
    let unknown = t.sign("/keys/k", "HS256", &[0u8; 32]).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let not_b64 = t
        .call(
            Method::POST,
            "/keys/k/sign",
            Some(json!({"alg":"ES256K","value":"***"})),
        )
        .await;
    assert_eq!(not_b64.status, StatusCode::BAD_REQUEST);
    let padded = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE.encode([9u8; 32])
    };
    assert!(padded.ends_with('='));
    let ok = t
        .call(
            Method::POST,
            "/keys/k/sign",
            Some(json!({"alg":"ES256K","value":padded})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        t.sign("/keys/missing", "ES256K", &[0u8; 32]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn verify_answers_true_false_and_accepts_high_s() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    let digest = [5u8; 32];
    t.emu.faults().force_high_s(true);
    let sig = unb64(
        t.sign("/keys/k", "ES256K", &digest).await.body["value"]
            .as_str()
            .expect("v"),
    );
    let verify = |d: [u8; 32], s: Vec<u8>, alg: &'static str| {
        t.call(
            Method::POST,
            "/keys/k//verify",
            Some(json!({"alg":alg,"digest":b64(&d),"value":b64(&s)})),
        )
    };
    let r = verify(digest, sig.clone(), "ES256K").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"value": true}));
    assert_eq!(
        verify([6u8; 32], sig.clone(), "ES256K").await.body,
        json!({"value": false})
    );
    assert_eq!(
        verify(digest, vec![0u8; 64], "ES256K").await.body,
        json!({"value": false})
    );
    assert_eq!(verify(digest, sig, "ES256").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.emu.counters().succeeded(Operation::Verify), 3);
}

#[tokio::test]
async fn update_attributes_and_refusals_for_disabled_expired_and_not_yet_valid_keys() {
    let t = TestVault::start().await;
    let bundle = t.create("k", "P-256").await;
    let path = kid_path(bundle["key"]["kid"].as_str().expect("kid"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;

    let cases = [
        (json!({"attributes":{"enabled":false}}), "KeyDisabled"),
        (
            json!({"attributes":{"enabled":true,"exp":now - 60}}),
            "KeyExpired",
        ),
        (
            json!({"attributes":{"exp":now + 3600,"nbf":now + 600}}),
            "KeyNotYetValid",
        ),
        (
            json!({"attributes":{"nbf":now - 600},"key_ops":["verify"]}),
            "KeyOperationForbidden",
        ),
    ];
    for (patch, inner) in cases {
        let r = t.call(Method::PATCH, &path, Some(patch.clone())).await;
        assert_eq!(r.status, StatusCode::OK, "{patch}");
        let s = t.sign(&path, "ES256", &[1u8; 32]).await;
        assert_eq!(s.status, StatusCode::FORBIDDEN, "{patch}");
        assert_eq!(s.error_code(), "Forbidden");
        assert_eq!(s.inner_code(), inner);
    }
    let r = t
        .call(
            Method::PATCH,
            "/keys/k",
            Some(json!({"key_ops":["sign","verify"],"tags":{"a":"b"}})),
        )
        .await;
    assert_eq!(r.body["tags"], json!({"a":"b"}));
    assert_eq!(r.body["attributes"]["exp"], now + 3600);
    assert_eq!(r.body["attributes"]["nbf"], now - 600);
    assert_eq!(t.sign(&path, "ES256", &[1u8; 32]).await.status, StatusCode::OK);
    let missing = t.call(Method::PATCH, "/keys/none", Some(json!({}))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn backup_delete_purge_restore_and_recover() {
    let t = TestVault::start().await;
    let original = t.create("k", "P-256K").await;
    t.create("k", "P-256K").await;
    let backup = t.call(Method::POST, "/keys/k/backup", None).await;
    assert_eq!(backup.status, StatusCode::OK);
    let blob = backup.body["value"].as_str().expect("blob").to_owned();

    let deleted = t.call(Method::DELETE, "/keys/k", None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        deleted.body["recoveryId"],
        format!("{}/deletedkeys/k", t.emu.url())
    );
    assert!(deleted.body["deletedDate"].is_i64() && deleted.body["scheduledPurgeDate"].is_i64());
    assert_eq!(
        t.call(Method::GET, "/keys/k", None).await.status,
        StatusCode::NOT_FOUND
    );
    let conflict = t
        .call(Method::POST, "/keys/k/create", Some(json!({"kty":"EC"})))
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.error_code(), "Conflict");
    let listed = t.call(Method::GET, "/deletedkeys", None).await;
    assert_eq!(listed.body["value"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        t.call(Method::GET, "/deletedkeys/k", None).await.status,
        StatusCode::OK
    );
    let purge = t.call(Method::DELETE, "/deletedkeys/k", None).await;
    assert_eq!(purge.status, StatusCode::NO_CONTENT);
    assert_eq!(
        t.call(Method::GET, "/deletedkeys/k", None).await.status,
        StatusCode::NOT_FOUND
    );

    let restored = t
        .call(Method::POST, "/keys/restore", Some(json!({"value": blob})))
        .await;
    assert_eq!(restored.status, StatusCode::OK, "{:?}", restored.body);
    assert_eq!(restored.body["key"]["crv"], "P-256K");
    let versions = t.call(Method::GET, "/keys/k/versions", None).await;
    assert_eq!(versions.body["value"].as_array().map(Vec::len), Some(2));
    let first = t
        .call(
            Method::GET,
            &kid_path(original["key"]["kid"].as_str().expect("kid")),
            None,
        )
        .await;
    assert_eq!(first.body["key"]["x"], original["key"]["x"]);
    let again = t
        .call(Method::POST, "/keys/restore", Some(json!({"value": blob})))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let corrupt = t
        .call(
            Method::POST,
            "/keys/restore",
            Some(json!({"value": b64(b"junk")})),
        )
        .await;
    assert_eq!(corrupt.status, StatusCode::BAD_REQUEST);

    t.call(Method::DELETE, "/keys/k", None).await;
    let recovered = t.call(Method::POST, "/deletedkeys/k/recover", None).await;
    assert_eq!(recovered.status, StatusCode::OK);
    assert_eq!(t.call(Method::GET, "/keys/k", None).await.status, StatusCode::OK);
    assert_eq!(
        t.call(Method::POST, "/deletedkeys/k/recover", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.call(Method::DELETE, "/keys/none", None).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let t = TestVault::start().await;
    assert_eq!(
        t.call(Method::GET, "/secrets/x", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.call(Method::DELETE, "/keys/k/create", None).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(t.emu.counters().get(Operation::Unknown), 2);
}

#[tokio::test]
async fn request_ids_are_set_and_client_request_ids_echoed() {
    let t = TestVault::start().await;
    let resp = t
        .http
        .get(t.url("/keys"))
        .bearer_auth(&t.token)
        .header("x-ms-client-request-id", "abc-123")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-ms-client-request-id"], "abc-123");
    assert_eq!(resp.headers()["x-ms-request-id"].len(), 36);
    assert!(resp.headers()["content-type"]
        .to_str()
        .is_ok_and(|c| c.starts_with("application/json")));
}

#[tokio::test]
async fn managed_hsm_flavour_differs_in_challenge_audience_key_types_and_rng() {
    let t = TestVault::start_with(Config {
        flavour: Flavour::ManagedHsm,
        ..Config::default()
    })
    .await;
    let challenge = t.send(Method::GET, &t.url("/keys"), None, None).await;
    assert!(challenge
        .header("www-authenticate")
        .is_some_and(|h| h.ends_with("resource=\"https://managedhsm.azure.net\"")));
    let soft = t
        .call(Method::POST, "/keys/k/create", Some(json!({"kty":"EC"})))
        .await;
    assert_eq!(soft.status, StatusCode::BAD_REQUEST);
    assert_eq!(t.create("k", "P-256K").await["key"]["kty"], "EC-HSM");
    let imported = t
        .call(
            Method::PUT,
            "/keys/i",
            Some(json!({"key":{"kty":"EC","crv":"P-256","d":b64(&[3u8;32])}})),
        )
        .await;
    assert_eq!(imported.body["key"]["kty"], "EC-HSM");
    let rng = t.call(Method::POST, "/rng", Some(json!({"count": 16}))).await;
    assert_eq!(rng.status, StatusCode::OK);
    assert_eq!(unb64(rng.body["value"].as_str().expect("value")).len(), 16);
    assert_eq!(
        t.call(Method::POST, "/rng", Some(json!({"count": 129})))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let vault = TestVault::start().await;
    assert_eq!(
        vault
            .call(Method::POST, "/rng", Some(json!({"count": 1})))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // A token for the vault audience is not accepted by the HSM.
    let r = t
        .send(Method::GET, &t.url("/keys"), Some(&vault.token), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn backups_do_not_cross_between_vault_and_managed_hsm() {
    let vault = TestVault::start().await;
    vault.create("k", "P-256").await;
    let blob = vault.call(Method::POST, "/keys/k/backup", None).await.body["value"].clone();
    let other_vault = TestVault::start().await;
    let ok = other_vault
        .call(Method::POST, "/keys/restore", Some(json!({"value": blob})))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let hsm = TestVault::start_with(Config {
        flavour: Flavour::ManagedHsm,
        ..Config::default()
    })
    .await;
    let refused = hsm
        .call(Method::POST, "/keys/restore", Some(json!({"value": blob})))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn persisted_state_keeps_keys_and_tokens_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        persist_dir: Some(dir.path().to_owned()),
        tls: true,
        ..Config::default()
    };
    let (x, token, ca_path, old_ca) = {
        let t = TestVault::start_with(config.clone()).await;
        let bundle = t.create("persisted", "P-256K").await;
        let ca = t.emu.ca_pem_path().expect("ca").to_owned();
        let old_ca = t.emu.ca_pem().expect("pem").to_owned();
        let token = t.token.clone();
        t.emu.shutdown().await;
        (bundle["key"]["x"].clone(), token, ca, old_ca)
    };
    assert_eq!(ca_path, dir.path().join("ca.pem"));
    let emu = Emulator::start(config).await.expect("restart");
    // A client that trusted the first run's CA file still trusts the restarted emulator.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(old_ca.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let resp = http
        .get(format!("{}/keys/persisted?api-version={API}", emu.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["key"]["x"], x);
    assert!(emu.key("PERSISTED").is_some());
}

#[tokio::test]
async fn direct_helpers_create_import_and_describe_keys() {
    let t = TestVault::start().await;
    let created = t.emu.create_key("direct", Curve::P256).expect("create");
    assert!(created.kid.starts_with(&format!("{}/keys/direct/", t.emu.url())));
    assert_eq!(t.emu.key("direct"), Some(created.clone()));
    let pk = created.public_key_compressed();
    assert!(pk[0] == 2 || pk[0] == 3);
    assert!(t.emu.create_key("bad name", Curve::P256).is_err());
    assert!(t.emu.import_key("z", Curve::P256, &[0u8; 32]).is_err());
    let r = t.call(Method::GET, &kid_path(&created.kid), None).await;
    assert_eq!(unb64(r.body["key"]["x"].as_str().expect("x")), created.x);
}
