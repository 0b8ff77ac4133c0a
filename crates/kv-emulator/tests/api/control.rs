//! The opt-in `/_emulator/` control API and per-operation denials.

use crate::{imds_token_request, TestVault};
use kv_emulator::{Config, Operation};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn control(t: &TestVault, command: Value) -> StatusCode {
    t.http
        .post(format!("{}/_emulator/faults", t.emu.url()))
        .json(&command)
        .send()
        .await
        .expect("answer")
        .status()
}

async fn with_control() -> TestVault {
    TestVault::start_with(Config {
        control_api: true,
        ..Config::default()
    })
    .await
}

#[tokio::test]
async fn control_api_is_off_by_default() {
    let t = TestVault::start().await;
    assert_eq!(control(&t, json!({"fault":"reset"})).await, StatusCode::NOT_FOUND);
    let r = t
        .http
        .get(format!("{}/_emulator/counters", t.emu.url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn control_api_injects_faults_and_reports_counters() {
    let t = with_control().await;
    t.create("k", "P-256K").await;
    let throttle = json!({"fault":"throttle_next","target":"Sign","n":1,"retry_after_s":2});
    assert_eq!(control(&t, throttle).await, StatusCode::NO_CONTENT);
    let r = t.sign("/keys/k", "ES256K", &[1u8; 32]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(
        t.sign("/keys/k", "ES256K", &[1u8; 32]).await.status,
        StatusCode::OK
    );

    let counters: Value = t
        .http
        .get(format!("{}/_emulator/counters", t.emu.url()))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(
        counters["Sign"],
        json!({"received": 2, "succeeded": 1, "failed": 1})
    );
    assert_eq!(counters["CreateKey"]["received"], 1);
    assert!(
        counters.get("Unknown").is_none(),
        "control calls are not counted: {counters}"
    );

    let reset = t
        .http
        .post(format!("{}/_emulator/counters/reset", t.emu.url()))
        .send()
        .await
        .expect("answer");
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(t.emu.counters().get(Operation::Sign), 0);
}

#[tokio::test]
async fn control_api_is_exempt_from_its_own_faults() {
    let t = with_control().await;
    assert_eq!(
        control(&t, json!({"fault":"fail_next","target":"All","n":5,"status":503})).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        control(&t, json!({"fault":"reset"})).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(t.call(Method::GET, "/keys", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn control_api_covers_every_fault_command() {
    let t = with_control().await;
    t.create("k", "P-256").await;
    let commands = [
        json!({"fault":"latency","target":"DataPlane","fixed_ms":1,"jitter_ms":1}),
        json!({"fault":"clear_latency"}),
        json!({"fault":"throttle_above_rate","target":"Identity","max":100,"per_ms":1000}),
        json!({"fault":"drop_next","target":"GetRandomBytes","n":1}),
        json!({"fault":"stall_next","target":"GetRandomBytes","n":1,"duration_ms":1}),
        json!({"fault":"force_high_s","on":true}),
        json!({"fault":"deny_key","key":"k","operation":"Sign"}),
        json!({"fault":"allow_key","key":"k"}),
        json!({"fault":"tokens_expire_after","seconds":null}),
        json!({"fault":"expire_issued_tokens"}),
        json!({"fault":"set_key_enabled","key":"k","enabled":false}),
        json!({"fault":"reset"}),
    ];
    for c in commands {
        assert_eq!(control(&t, c.clone()).await, StatusCode::NO_CONTENT, "{c}");
    }
    assert_eq!(
        control(
            &t,
            json!({"fault":"set_key_enabled","key":"none","enabled":false})
        )
        .await,
        StatusCode::NOT_FOUND
    );
    for bad in [
        json!({"fault":"explode"}),
        json!({"fault":"drop_next","target":"Nope","n":1}),
        json!({"fault":"drop_next","target":"Sign"}),
    ] {
        assert_eq!(control(&t, bad.clone()).await, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn denying_one_operation_leaves_the_others_allowed() {
    let t = TestVault::start().await;
    t.create("k", "P-256").await;
    t.emu.faults().deny_key_operation("k", Operation::Sign);
    assert_eq!(t.call(Method::GET, "/keys/k", None).await.status, StatusCode::OK);
    let r = t.sign("/keys/k", "ES256", &[1u8; 32]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.inner_code(), "ForbiddenByRbac");
    t.emu.faults().allow_key("k");
    assert_eq!(
        t.sign("/keys/k", "ES256", &[1u8; 32]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn injected_identity_faults_use_oauth_shaped_bodies() {
    let t = TestVault::start().await;
    t.emu.faults().fail_next(Operation::ImdsToken, 1, 503);
    let r = imds_token_request(&t.http, &t.emu.imds_endpoint())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"], "server_error");
}
