//! Every fault, observed through behaviour and counters (no wall-clock assertions beyond a lower bound).

use crate::{imds_token_request, kid_path, unb64, TestVault};
use kv_emulator::{s_is_high, Curve, Operation, Target};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn counters_count_every_attempt_and_its_outcome() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    let unauthenticated = t.send(Method::POST, &t.url("/keys/k/sign"), None, None).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        t.sign("/keys/k", "ES256K", &[1u8; 32]).await.status,
        StatusCode::OK
    );
    let c = t.emu.counters();
    assert_eq!(c.get(Operation::Sign), 2);
    assert_eq!(c.succeeded(Operation::Sign), 1);
    assert_eq!(c.failed(Operation::Sign), 1);
    assert_eq!(c.get(Operation::CreateKey), 1);
    assert_eq!(c.snapshot().len(), 2);
    c.reset();
    assert_eq!(c.get(Operation::Sign), 0);
}

#[tokio::test]
async fn latency_delays_only_the_targeted_operation() {
    let t = TestVault::start().await;
    t.create("k", "P-256").await;
    t.emu.faults().set_latency(
        Operation::Sign,
        Duration::from_millis(150),
        Duration::from_millis(20),
    );
    let started = Instant::now();
    assert_eq!(
        t.sign("/keys/k", "ES256", &[1u8; 32]).await.status,
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
    t.emu.faults().clear_latency();
    assert_eq!(
        t.sign("/keys/k", "ES256", &[1u8; 32]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn throttle_next_n_calls_with_retry_after() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    t.emu
        .faults()
        .throttle_next(Operation::Sign, 2, Some(Duration::from_millis(1500)));
    for _ in 0..2 {
        let r = t.sign("/keys/k", "ES256K", &[1u8; 32]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.error_code(), "Throttled");
        assert_eq!(r.header("retry-after"), Some("2"));
    }
    assert_eq!(t.call(Method::GET, "/keys/k", None).await.status, StatusCode::OK);
    assert_eq!(
        t.sign("/keys/k", "ES256K", &[1u8; 32]).await.status,
        StatusCode::OK
    );
    assert_eq!(t.emu.counters().failed(Operation::Sign), 2);
}

#[tokio::test]
async fn throttle_above_a_rate_admits_the_limit_then_answers_429() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    t.emu
        .faults()
        .throttle_above_rate(Target::DataPlane, 3, Duration::from_secs(3600), None);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(t.sign("/keys/k", "ES256K", &[1u8; 32]).await.status);
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3]);
    assert_eq!(&statuses[3..], &[StatusCode::TOO_MANY_REQUESTS; 2]);
    let r = t.call(Method::GET, "/keys/k", None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), None);
    t.emu.faults().reset();
    assert_eq!(t.call(Method::GET, "/keys/k", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn fail_next_answers_5xx_with_an_azure_error_body() {
    let t = TestVault::start().await;
    t.create("k", "P-256").await;
    t.emu.faults().fail_next(Target::DataPlane, 1, 503);
    t.emu.faults().fail_next(Operation::Sign, 1, 500);
    let first = t.sign("/keys/k", "ES256", &[1u8; 32]).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.error_code(), "ServiceUnavailable");
    let second = t.sign("/keys/k", "ES256", &[1u8; 32]).await;
    assert_eq!(second.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(second.error_code(), "InternalServerError");
    assert_eq!(
        t.sign("/keys/k", "ES256", &[1u8; 32]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn dropped_connection_gives_the_client_no_response() {
    let t = TestVault::start_tls().await;
    t.create("k", "P-256K").await;
    t.emu.faults().drop_next(Operation::Sign, 1);
    let url = t.url("/keys/k/sign");
    let body = json!({"alg":"ES256K","value":crate::b64(&[1u8;32])});
    let err = t
        .http
        .post(&url)
        .bearer_auth(&t.token)
        .json(&body)
        .send()
        .await
        .expect_err("connection dropped");
    assert!(!err.is_timeout(), "{err}");
    assert!(err.status().is_none());
    let ok = t
        .http
        .post(&url)
        .bearer_auth(&t.token)
        .json(&body)
        .send()
        .await
        .expect("answer");
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(t.emu.counters().get(Operation::Sign), 2);
    assert_eq!(t.emu.counters().succeeded(Operation::Sign), 1);
}

#[tokio::test]
async fn stalled_request_is_never_answered() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    let faults = t.emu.faults();
    faults.stall_next(Operation::Sign, 1, Duration::from_secs(3600));
    let url = t.url("/keys/k/sign");
    let body = json!({"alg":"ES256K","value":crate::b64(&[1u8;32])});
    let err = t
        .http
        .post(&url)
        .timeout(Duration::from_millis(300))
        .bearer_auth(&t.token)
        .json(&body)
        .send()
        .await
        .expect_err("stalled");
    assert!(err.is_timeout(), "{err}");

    // A short stall ends with the connection closed, still without an answer.
    faults.stall_next(Operation::Sign, 1, Duration::from_millis(20));
    let err = t
        .http
        .post(&url)
        .bearer_auth(&t.token)
        .json(&body)
        .send()
        .await
        .expect_err("closed");
    assert!(err.status().is_none());
    assert_eq!(
        t.sign("/keys/k", "ES256K", &[1u8; 32]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_can_expire_early_or_all_at_once() {
    let t = TestVault::start().await;
    t.create("k", "P-256").await;
    let faults = t.emu.faults();
    faults.tokens_expire_after(Some(Duration::ZERO));
    let early = t.emu.issue_token();
    let r = t.send(Method::GET, &t.url("/keys/k"), Some(&early), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").is_some());
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("expired")));
    faults.tokens_expire_after(None);

    assert_eq!(t.call(Method::GET, "/keys/k", None).await.status, StatusCode::OK);
    faults.expire_issued_tokens();
    assert_eq!(
        t.call(Method::GET, "/keys/k", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let fresh = t.emu.issue_token();
    let r = t.send(Method::GET, &t.url("/keys/k"), Some(&fresh), None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn forced_high_s_signatures_are_high_on_both_curves() {
    let t = TestVault::start().await;
    t.emu.faults().force_high_s(true);
    for (name, crv, alg, curve) in [
        ("p", "P-256", "ES256", Curve::P256),
        ("k", "P-256K", "ES256K", Curve::P256K),
    ] {
        t.create(name, crv).await;
        for _ in 0..8 {
            let r = t.sign(&format!("/keys/{name}"), alg, &[7u8; 32]).await;
            let sig: [u8; 64] = unb64(r.body["value"].as_str().expect("value"))
                .try_into()
                .expect("64 bytes");
            assert!(s_is_high(curve, &sig));
            assert!(t.emu.verify(name, None, &[7u8; 32], &sig));
        }
    }
}

#[tokio::test]
async fn natural_signatures_include_both_halves_of_s_on_secp256k1() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    let mut high = 0;
    for _ in 0..64 {
        let r = t.sign("/keys/k", "ES256K", &[7u8; 32]).await;
        let sig: [u8; 64] = unb64(r.body["value"].as_str().expect("value"))
            .try_into()
            .expect("64 bytes");
        high += usize::from(s_is_high(Curve::P256K, &sig));
    }
    // 64 fair coin flips all landing the same way has probability 2^-63.
    assert!(high > 0 && high < 64, "{high} of 64 high");
}

#[tokio::test]
async fn denied_key_gets_forbidden_by_rbac_until_allowed() {
    let t = TestVault::start().await;
    let bundle = t.create("k", "P-256").await;
    t.create("other", "P-256").await;
    t.emu.faults().deny_key("K");
    let r = t
        .sign(
            &kid_path(bundle["key"]["kid"].as_str().expect("kid")),
            "ES256",
            &[1u8; 32],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.error_code(), "Forbidden");
    assert_eq!(r.inner_code(), "ForbiddenByRbac");
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("Microsoft.KeyVault/vaults/keys/sign/action")));
    assert_eq!(
        t.call(Method::GET, "/keys/k", None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.call(Method::GET, "/keys/other", None).await.status,
        StatusCode::OK
    );
    t.emu.faults().allow_key("k");
    assert_eq!(t.call(Method::GET, "/keys/k", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn key_disabled_mid_run_refuses_sign_then_recovers() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    assert_eq!(
        t.sign("/keys/k", "ES256K", &[1u8; 32]).await.status,
        StatusCode::OK
    );
    assert!(t.emu.faults().set_key_enabled("k", false));
    let r = t.sign("/keys/k", "ES256K", &[1u8; 32]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.inner_code(), "KeyDisabled");
    assert_eq!(
        t.call(Method::GET, "/keys/k", None).await.body["attributes"]["enabled"],
        false
    );
    assert!(t.emu.faults().set_key_enabled("k", true));
    assert_eq!(
        t.sign("/keys/k", "ES256K", &[1u8; 32]).await.status,
        StatusCode::OK
    );
    assert!(!t.emu.faults().set_key_enabled("missing", false));
}

#[tokio::test]
async fn faults_do_not_consume_unauthenticated_challenge_requests() {
    let t = TestVault::start().await;
    t.create("k", "P-256K").await;
    t.emu.faults().fail_next(Operation::Sign, 1, 500);
    let challenge = t.send(Method::POST, &t.url("/keys/k/sign"), None, None).await;
    assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        t.sign("/keys/k", "ES256K", &[1u8; 32]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[tokio::test]
async fn identity_endpoints_can_be_throttled_too() {
    let t = TestVault::start().await;
    t.emu
        .faults()
        .throttle_next(Target::Identity, 1, Some(Duration::from_secs(5)));
    let r = imds_token_request(&t.http, &t.emu.imds_endpoint())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(t.emu.counters().failed(Operation::ImdsToken), 1);
}
