//! `wrapkey` / `unwrapkey`: RSA-HSM keys (RSA-OAEP-256, RSA-OAEP, RSA1_5) and Managed HSM oct-HSM keys
//! (A128KW/A256KW, RFC 3394), and every documented refusal: unknown key or version (404), bad or mismatched
//! `alg` and bad `value` (400 BadParameter), `key_ops` without the operation, a disabled key, and an identity
//! without the `wrap/action` / `unwrap/action` data action (403).

use crate::{b64, TestVault};
use kv_emulator::{Config, Flavour, Operation};
use openssl::encrypt::Encrypter;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::{Padding, Rsa};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .expect("base64url")
}

async fn create_rsa(t: &TestVault, name: &str, body: Value) -> Value {
    let r = t
        .call(Method::POST, &format!("/keys/{name}/create"), Some(body))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body
}

fn kid_path(bundle: &Value) -> String {
    let kid = bundle["key"]["kid"].as_str().expect("kid");
    format!("/keys/{}", kid.split("/keys/").nth(1).expect("path"))
}

async fn wrap_call(t: &TestVault, path: &str, op: &str, alg: &str, value: &[u8]) -> crate::Reply {
    t.call(
        Method::POST,
        &format!("{path}/{op}"),
        Some(json!({ "alg": alg, "value": b64(value) })),
    )
    .await
}

#[tokio::test]
async fn rsa_hsm_keys_wrap_and_unwrap_under_every_rsa_algorithm_and_size() {
    let t = TestVault::start_tls().await;
    let secret = b"0123456789abcdef0123456789abcdef";
    for bits in [2048u32, 3072, 4096] {
        let name = format!("kek-{bits}");
        let bundle = create_rsa(
            &t,
            &name,
            json!({"kty":"RSA-HSM","key_size":bits,"key_ops":["wrapKey","unwrapKey"]}),
        )
        .await;
        let key = &bundle["key"];
        assert_eq!(key["kty"], "RSA-HSM");
        assert_eq!(key["key_ops"], json!(["wrapKey", "unwrapKey"]));
        assert_eq!(key["e"], "AQAB");
        assert_eq!(unb64(key["n"].as_str().unwrap()).len() * 8, bits as usize);
        assert!(key.get("d").is_none(), "private part leaked");
        let path = kid_path(&bundle);
        for alg in ["RSA-OAEP-256", "RSA-OAEP", "RSA1_5"] {
            let wrapped = wrap_call(&t, &path, "wrapkey", alg, secret).await;
            assert_eq!(wrapped.status, StatusCode::OK, "{alg} {:?}", wrapped.body);
            assert_eq!(wrapped.body["kid"], key["kid"]);
            let value = unb64(wrapped.body["value"].as_str().unwrap());
            assert_eq!(value.len() * 8, bits as usize);
            assert!(!value.windows(secret.len()).any(|w| w == secret));
            // The latest version, addressed without a version, unwraps too.
            let unwrapped = wrap_call(&t, &format!("/keys/{name}"), "unwrapkey", alg, &value).await;
            assert_eq!(unwrapped.status, StatusCode::OK, "{alg} {:?}", unwrapped.body);
            assert_eq!(unb64(unwrapped.body["value"].as_str().unwrap()), secret);
            assert_eq!(unwrapped.body["kid"], key["kid"]);
        }
    }
}

#[tokio::test]
async fn a_key_wrapped_locally_with_the_public_key_and_rsa_oaep_256_unwraps_in_the_vault() {
    // What a client that holds only the public key (n, e) does: RFC 8017 OAEP with SHA-256 and MGF1-SHA-256.
    let t = TestVault::start().await;
    let bundle = create_rsa(&t, "kek", json!({"kty":"RSA-HSM"})).await;
    let n = openssl::bn::BigNum::from_slice(&unb64(bundle["key"]["n"].as_str().unwrap())).unwrap();
    let e = openssl::bn::BigNum::from_slice(&unb64(bundle["key"]["e"].as_str().unwrap())).unwrap();
    let public = PKey::from_rsa(Rsa::from_public_components(n, e).unwrap()).unwrap();
    let mut enc = Encrypter::new(&public).unwrap();
    enc.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
    enc.set_rsa_oaep_md(MessageDigest::sha256()).unwrap();
    enc.set_rsa_mgf1_md(MessageDigest::sha256()).unwrap();
    let secret = [42u8; 32];
    let mut out = vec![0u8; enc.encrypt_len(&secret).unwrap()];
    let n = enc.encrypt(&secret, &mut out).unwrap();
    out.truncate(n);
    let r = wrap_call(&t, &kid_path(&bundle), "unwrapkey", "RSA-OAEP-256", &out).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(unb64(r.body["value"].as_str().unwrap()), secret);
    // Default key_ops of an RSA key include both wrap operations.
    let ops = bundle["key"]["key_ops"].as_array().unwrap();
    assert!(ops.contains(&json!("wrapKey")) && ops.contains(&json!("unwrapKey")));
}

#[tokio::test]
async fn bad_algorithms_values_and_names_are_bad_parameters_and_unknown_keys_404() {
    let t = TestVault::start().await;
    let bundle = create_rsa(&t, "kek", json!({"kty":"RSA-HSM"})).await;
    let path = kid_path(&bundle);
    let ok = wrap_call(&t, &path, "wrapkey", "RSA-OAEP-256", &[1u8; 32]).await;
    let wrapped = unb64(ok.body["value"].as_str().unwrap());
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "wrapkey",
            json!({"alg":"ES256","value":b64(&[1u8;32])}),
            "Invalid algorithm",
        ),
        (
            "wrapkey",
            json!({"alg":"A256KW","value":b64(&[1u8;32])}),
            "incompatible",
        ),
        ("wrapkey", json!({"value":b64(&[1u8;32])}), "'alg' is required"),
        ("wrapkey", json!({"alg":"RSA-OAEP-256"}), "'value' is required"),
        ("wrapkey", json!({"alg":"RSA-OAEP-256","value":"!!"}), "base64url"),
        (
            "wrapkey",
            json!({"alg":"RSA-OAEP-256","value":b64(&[1u8;191])}),
            "1 to 190 bytes",
        ),
        (
            "wrapkey",
            json!({"alg":"RSA-OAEP-256","value":""}),
            "1 to 190 bytes",
        ),
        (
            "unwrapkey",
            json!({"alg":"RSA-OAEP-256","value":b64(&[1u8;32])}),
            "modulus size",
        ),
        (
            "unwrapkey",
            json!({"alg":"RSA-OAEP-256","value":b64(&[1u8;256])}),
            "could not be unwrapped",
        ),
        // OAEP with SHA-1 does not open what OAEP-256 wrapped.
        (
            "unwrapkey",
            json!({"alg":"RSA-OAEP","value":b64(&wrapped)}),
            "could not be unwrapped",
        ),
    ];
    for (op, body, needle) in cases {
        let r = t
            .call(Method::POST, &format!("{path}/{op}"), Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{op} {body} {:?}", r.body);
        assert_eq!(r.error_code(), "BadParameter", "{op} {body}");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{op} {body}: {message}");
    }
    let no_body = t
        .send(
            Method::POST,
            &t.url(&format!("{path}/wrapkey")),
            Some(&t.token),
            None,
        )
        .await;
    assert_eq!(no_body.status, StatusCode::BAD_REQUEST);
    for missing in ["/keys/nope", "/keys/kek/00000000000000000000000000000000"] {
        let r = wrap_call(&t, missing, "unwrapkey", "RSA-OAEP-256", &wrapped).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(r.error_code(), "KeyNotFound");
    }
    // A deleted key is gone for wrap operations too; recovered, it unwraps again.
    assert_eq!(
        t.call(Method::DELETE, "/keys/kek", None).await.status,
        StatusCode::OK
    );
    let r = wrap_call(&t, &path, "unwrapkey", "RSA-OAEP-256", &wrapped).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let recovered = t.call(Method::POST, "/deletedkeys/kek/recover", None).await;
    assert_eq!(recovered.status, StatusCode::OK);
    let r = wrap_call(&t, &path, "unwrapkey", "RSA-OAEP-256", &wrapped).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(unb64(r.body["value"].as_str().unwrap()), [1u8; 32]);
    // Unauthenticated: 401 with the challenge, as for every data-plane call.
    let r = t
        .send(
            Method::POST,
            &t.url(&format!("{path}/unwrapkey")),
            None,
            Some(json!({"alg":"RSA-OAEP-256","value":b64(&wrapped)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").is_some());
}

#[tokio::test]
async fn key_ops_and_disabled_keys_refuse_with_403() {
    let t = TestVault::start().await;
    let sign_only = create_rsa(&t, "signer", json!({"kty":"RSA-HSM","key_ops":["sign","verify"]})).await;
    let r = wrap_call(&t, &kid_path(&sign_only), "wrapkey", "RSA-OAEP-256", &[1u8; 32]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.inner_code(), "KeyOperationForbidden");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("wrapKey"));

    let wrap_only = create_rsa(&t, "wraponly", json!({"kty":"RSA-HSM","key_ops":["wrapKey"]})).await;
    let path = kid_path(&wrap_only);
    let wrapped = wrap_call(&t, &path, "wrapkey", "RSA-OAEP-256", &[1u8; 32]).await;
    assert_eq!(wrapped.status, StatusCode::OK);
    let value = unb64(wrapped.body["value"].as_str().unwrap());
    let r = wrap_call(&t, &path, "unwrapkey", "RSA-OAEP-256", &value).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("unwrapKey"));

    // Granting unwrapKey through an update makes it work; disabling the key stops it.
    let r = t
        .call(
            Method::PATCH,
            &path,
            Some(json!({"key_ops":["wrapKey","unwrapKey"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        wrap_call(&t, &path, "unwrapkey", "RSA-OAEP-256", &value)
            .await
            .status,
        StatusCode::OK
    );
    let r = t
        .call(
            Method::PATCH,
            &path,
            Some(json!({"attributes":{"enabled":false}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = wrap_call(&t, &path, "unwrapkey", "RSA-OAEP-256", &value).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.inner_code(), "KeyDisabled");
}

#[tokio::test]
async fn an_identity_without_the_unwrap_data_action_gets_forbidden_by_rbac() {
    let t = TestVault::start().await;
    let bundle = create_rsa(&t, "kek", json!({"kty":"RSA-HSM"})).await;
    let path = kid_path(&bundle);
    t.emu.faults().deny_key_operation("kek", Operation::UnwrapKey);
    let wrapped = wrap_call(&t, &path, "wrapkey", "RSA-OAEP-256", &[1u8; 32]).await;
    assert_eq!(wrapped.status, StatusCode::OK, "wrap is still allowed");
    let value = unb64(wrapped.body["value"].as_str().unwrap());
    let r = wrap_call(&t, &path, "unwrapkey", "RSA-OAEP-256", &value).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_code(), "Forbidden");
    assert_eq!(r.inner_code(), "ForbiddenByRbac");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Action: 'Microsoft.KeyVault/vaults/keys/unwrap/action'"),
        "{message}"
    );
    assert!(message.contains("/keys/kek'"), "{message}");
    t.emu.faults().deny_key_operation("kek", Operation::WrapKey);
    let r = wrap_call(&t, &path, "wrapkey", "RSA-OAEP-256", &[1u8; 32]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Microsoft.KeyVault/vaults/keys/wrap/action"));
    t.emu.faults().allow_key("kek");
    assert_eq!(
        wrap_call(&t, &path, "unwrapkey", "RSA-OAEP-256", &value)
            .await
            .status,
        StatusCode::OK
    );
    let counters = t.emu.counters();
    assert_eq!(counters.get(Operation::UnwrapKey), 2);
    assert_eq!(counters.failed(Operation::UnwrapKey), 1);
}

#[tokio::test]
async fn managed_hsm_oct_keys_wrap_with_aes_key_wrap_and_vaults_refuse_them() {
    let vault = TestVault::start().await;
    let r = vault
        .call(
            Method::POST,
            "/keys/aes/create",
            Some(json!({"kty":"oct-HSM","key_size":256})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Managed HSM"));

    let t = TestVault::start_with(Config {
        flavour: Flavour::ManagedHsm,
        ..Config::default()
    })
    .await;
    let r = t
        .call(Method::POST, "/keys/soft/create", Some(json!({"kty":"RSA"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "Managed HSM keys are HSM keys");
    let secret = [9u8; 32];
    for (bits, alg, other) in [(128u32, "A128KW", "A256KW"), (256, "A256KW", "A128KW")] {
        let name = format!("aes{bits}");
        let bundle = create_rsa(&t, &name, json!({"kty":"oct-HSM","key_size":bits})).await;
        assert_eq!(bundle["key"]["kty"], "oct-HSM");
        assert_eq!(bundle["key"]["key_size"], bits);
        assert!(bundle["key"].get("k").is_none(), "the AES key left the HSM");
        let path = kid_path(&bundle);
        let wrapped = wrap_call(&t, &path, "wrapkey", alg, &secret).await;
        assert_eq!(wrapped.status, StatusCode::OK, "{:?}", wrapped.body);
        let value = unb64(wrapped.body["value"].as_str().unwrap());
        assert_eq!(value.len(), secret.len() + 8);
        let back = wrap_call(&t, &path, "unwrapkey", alg, &value).await;
        assert_eq!(unb64(back.body["value"].as_str().unwrap()), secret);
        let wrong = wrap_call(&t, &path, "wrapkey", other, &secret).await;
        assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
        let rsa_alg = wrap_call(&t, &path, "wrapkey", "RSA-OAEP-256", &secret).await;
        assert_eq!(rsa_alg.status, StatusCode::BAD_REQUEST);
        let odd = wrap_call(&t, &path, "wrapkey", alg, &secret[..20]).await;
        assert_eq!(odd.status, StatusCode::BAD_REQUEST);
    }
    let hsm_rsa = create_rsa(&t, "kek", json!({"kty":"RSA-HSM","key_size":3072})).await;
    t.emu.faults().deny_key_operation("kek", Operation::WrapKey);
    let r = wrap_call(&t, &kid_path(&hsm_rsa), "wrapkey", "RSA-OAEP-256", &secret).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Microsoft.KeyVault/managedHsm/keys/wrap/action"));
}

#[tokio::test]
async fn rsa_keys_are_listed_read_and_refuse_ec_signing() {
    let t = TestVault::start().await;
    let bundle = create_rsa(&t, "kek", json!({"kty":"RSA"})).await;
    assert_eq!(bundle["key"]["kty"], "RSA");
    let got = t.call(Method::GET, "/keys/kek", None).await;
    assert_eq!(got.body["key"]["n"], bundle["key"]["n"]);
    let r = t.sign("/keys/kek", "ES256", &[1u8; 32]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(t.emu.key("kek").is_none(), "the EC view has no RSA key");
    let kid = t
        .emu
        .create_rsa_key("kek2", 2048, &["wrapKey", "unwrapKey"])
        .expect("created");
    assert!(kid.contains("/keys/kek2/"));
}
