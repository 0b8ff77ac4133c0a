//! Entra ID token endpoints, discovery documents, IMDS and the App Service identity endpoint.

use crate::{b64, TestVault};
use kv_emulator::{Config, Operation};
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn form(t: &TestVault, url: &str, fields: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = t.http.post(url).form(fields).send().await.expect("answer");
    let status = r.status();
    (status, r.json().await.expect("json"))
}

fn secret_grant<'a>(t: &'a TestVault, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", t.emu.client_id()),
        ("client_secret", t.emu.client_secret()),
        ("scope", scope),
    ]
}

fn fake_jwt() -> String {
    format!(
        "{}.{}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64(br#"{"sub":"system:serviceaccount:tezos:tzkms","aud":"api://AzureADTokenExchange"}"#),
        b64(b"signature")
    )
}

#[tokio::test]
async fn v2_client_secret_grant_issues_a_token_the_vault_accepts() {
    let t = TestVault::start_tls().await;
    let (status, body) = form(
        &t,
        &t.emu.token_url(),
        &secret_grant(&t, "https://vault.azure.net/.default"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["ext_expires_in"].is_i64());
    let token = body["access_token"].as_str().expect("token");
    let r = t.send(Method::GET, &t.url("/keys"), Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(t.emu.counters().succeeded(Operation::EntraToken), 1);
}

#[tokio::test]
async fn v1_resource_grant_answers_with_string_fields() {
    let t = TestVault::start().await;
    let fields = [
        ("grant_type", "client_credentials"),
        ("client_id", t.emu.client_id()),
        ("client_secret", t.emu.client_secret()),
        ("resource", "https://vault.azure.net"),
    ];
    let (status, body) = form(&t, &t.emu.token_url_v1(), &fields).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for field in ["expires_in", "expires_on", "not_before", "ext_expires_in"] {
        assert!(
            body[field].as_str().is_some_and(|s| s.parse::<i64>().is_ok()),
            "{field}: {body}"
        );
    }
    assert_eq!(body["resource"], "https://vault.azure.net");
    let r = t
        .send(Method::GET, &t.url("/keys"), body["access_token"].as_str(), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn token_endpoint_checks_tenant_client_secret_grant_and_scope() {
    let t = TestVault::start().await;
    let good_scope = "https://vault.azure.net/.default";
    let url = t.emu.token_url();
    let wrong_tenant = url.replace(t.emu.tenant_id(), "00000000-0000-0000-0000-000000000000");
    let (s, b) = form(&t, &wrong_tenant, &secret_grant(&t, good_scope)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(b["error_description"]
        .as_str()
        .is_some_and(|d| d.starts_with("AADSTS90002")));

    let mut fields = secret_grant(&t, good_scope);
    fields[1] = ("client_id", "someone-else");
    let (s, b) = form(&t, &url, &fields).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unauthorized_client"))
    );
    assert_eq!(b["error_codes"][0], 700016);

    let mut fields = secret_grant(&t, good_scope);
    fields[2] = ("client_secret", "wrong");
    let (s, b) = form(&t, &url, &fields).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert_eq!(b["error_codes"][0], 7000215);

    let mut fields = secret_grant(&t, good_scope);
    fields[0] = ("grant_type", "password");
    let (s, b) = form(&t, &url, &fields).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );

    let (s, b) = form(&t, &url, &secret_grant(&t, "https://vault.azure.net")).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    let (s, _) = form(&t, &url, &secret_grant(&t, "https://example.com/.default")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let (s, b) = form(&t, &url, &[("client_id", t.emu.client_id())]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error_codes"][0], 900144);

    let no_credential = [
        ("grant_type", "client_credentials"),
        ("client_id", t.emu.client_id()),
        ("scope", good_scope),
    ];
    let (s, b) = form(&t, &url, &no_credential).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
}

#[tokio::test]
async fn client_assertion_grant_accepts_any_well_formed_jwt_by_default() {
    let t = TestVault::start().await;
    let jwt = fake_jwt();
    let fields = [
        ("grant_type", "client_credentials"),
        ("client_id", t.emu.client_id()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", jwt.as_str()),
        ("scope", "https://vault.azure.net/.default"),
    ];
    let (s, b) = form(&t, &t.emu.token_url(), &fields).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut bad = fields;
    bad[3] = ("client_assertion", "not-a-jwt");
    let (s, b) = form(&t, &t.emu.token_url(), &bad).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    let mut bad_type = fields;
    bad_type[2] = ("client_assertion_type", "urn:other");
    let (s, _) = form(&t, &t.emu.token_url(), &bad_type).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn client_assertion_must_match_a_configured_federated_token() {
    let expected = fake_jwt();
    let t = TestVault::start_with(Config {
        federated_token: Some(expected.clone()),
        ..Config::default()
    })
    .await;
    let other = format!("{}.{}.{}", b64(b"{}"), b64(b"{}"), b64(b"x"));
    for (assertion, status) in [
        (expected.as_str(), StatusCode::OK),
        (other.as_str(), StatusCode::UNAUTHORIZED),
    ] {
        let fields = [
            ("grant_type", "client_credentials"),
            ("client_id", t.emu.client_id()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", "https://vault.azure.net/.default"),
        ];
        assert_eq!(form(&t, &t.emu.token_url(), &fields).await.0, status);
    }
}

#[tokio::test]
async fn openid_and_instance_discovery_point_back_at_the_emulator() {
    let t = TestVault::start_tls().await;
    let base = t.emu.authority_host();
    let tenant = t.emu.tenant_id();
    let r = t
        .http
        .get(format!("{base}/{tenant}/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.expect("json");
    assert_eq!(doc["token_endpoint"], t.emu.token_url());
    assert!(doc["authorization_endpoint"]
        .as_str()
        .is_some_and(|a| a.starts_with(base)));
    let v1: Value = t
        .http
        .get(format!("{base}/{tenant}/.well-known/openid-configuration"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(v1["token_endpoint"], t.emu.token_url_v1());
    let unknown = t
        .http
        .get(format!("{base}/someone/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .expect("answer");
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let inst: Value = t
        .http
        .get(format!("{base}/common/discovery/instance?api-version=1.1"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert!(inst["tenant_discovery_endpoint"]
        .as_str()
        .is_some_and(|e| e.ends_with("/v2.0/.well-known/openid-configuration")));
    let keys: Value = t
        .http
        .get(format!("{base}/{tenant}/discovery/v2.0/keys"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert!(keys["keys"].is_array());
    assert_eq!(t.emu.counters().get(Operation::EntraDiscovery), 5);
}

async fn imds(t: &TestVault, query: &[(&str, &str)], metadata: bool) -> (StatusCode, Value) {
    let mut req = t.http.get(t.emu.imds_endpoint()).query(query);
    if metadata {
        req = req.header("Metadata", "true");
    }
    let r = req.send().await.expect("answer");
    let status = r.status();
    (status, r.json().await.expect("json"))
}

#[tokio::test]
async fn imds_issues_tokens_with_string_fields_over_plain_http() {
    let t = TestVault::start_tls().await;
    assert!(t.emu.imds_endpoint().starts_with("http://"));
    let (s, b) = imds(
        &t,
        &[
            ("api-version", "2018-02-01"),
            ("resource", "https://vault.azure.net"),
        ],
        true,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for field in ["expires_in", "expires_on", "not_before", "ext_expires_in"] {
        assert!(
            b[field].as_str().is_some_and(|v| v.parse::<i64>().is_ok()),
            "{field}"
        );
    }
    assert_eq!(b["refresh_token"], "");
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["resource"], "https://vault.azure.net");
    assert_eq!(b["client_id"], t.emu.config().managed_identity.client_id);
    let r = t
        .send(Method::GET, &t.url("/keys"), b["access_token"].as_str(), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn imds_requires_metadata_header_api_version_resource_and_a_known_identity() {
    let t = TestVault::start().await;
    let mi = t.emu.config().managed_identity.clone();
    let base = [
        ("api-version", "2019-08-01"),
        ("resource", "https://vault.azure.net"),
    ];
    let (s, b) = imds(&t, &base, false).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error_description"], "Required metadata header not specified");
    let (s, _) = imds(&t, &[("resource", "https://vault.azure.net")], true).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = imds(&t, &[("api-version", "2019-08-01")], true).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, b) = imds(
        &t,
        &[
            ("api-version", "2019-08-01"),
            ("resource", "https://unknown.example"),
        ],
        true,
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_resource"))
    );
    for (param, value) in [
        ("client_id", mi.client_id.as_str()),
        ("object_id", mi.object_id.as_str()),
        ("msi_res_id", mi.resource_id.as_str()),
    ] {
        let mut q = base.to_vec();
        q.push((param, value));
        assert_eq!(imds(&t, &q, true).await.0, StatusCode::OK, "{param}");
        q.pop();
        q.push((param, "unknown"));
        let (s, b) = imds(&t, &q, true).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{param}");
        assert_eq!(b["error_description"], "Identity not found");
    }
    let mut both = base.to_vec();
    both.push(("client_id", mi.client_id.as_str()));
    both.push(("object_id", mi.object_id.as_str()));
    assert_eq!(imds(&t, &both, true).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn managed_hsm_tokens_come_from_imds_for_the_hsm_resource() {
    let t = TestVault::start_with(Config {
        flavour: kv_emulator::Flavour::ManagedHsm,
        ..Config::default()
    })
    .await;
    let (_, vault) = imds(
        &t,
        &[
            ("api-version", "2018-02-01"),
            ("resource", "https://vault.azure.net"),
        ],
        true,
    )
    .await;
    let (_, hsm) = imds(
        &t,
        &[
            ("api-version", "2018-02-01"),
            ("resource", "https://managedhsm.azure.net/"),
        ],
        true,
    )
    .await;
    let refused = t
        .send(Method::GET, &t.url("/keys"), vault["access_token"].as_str(), None)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("audience")));
    let ok = t
        .send(Method::GET, &t.url("/keys"), hsm["access_token"].as_str(), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn app_service_endpoint_checks_the_identity_header() {
    let t = TestVault::start_tls().await;
    let query = [
        ("api-version", "2019-08-01"),
        ("resource", "https://vault.azure.net"),
    ];
    let ok = t
        .http
        .get(t.emu.identity_endpoint())
        .query(&query)
        .header("X-IDENTITY-HEADER", t.emu.identity_header())
        .send()
        .await
        .expect("answer");
    assert_eq!(ok.status(), StatusCode::OK);
    let b: Value = ok.json().await.expect("json");
    assert!(b["expires_on"].as_str().is_some_and(|v| v.parse::<i64>().is_ok()));
    assert_eq!(b["token_type"], "Bearer");
    assert_eq!(b["client_id"], t.emu.config().managed_identity.client_id);
    let r = t
        .send(Method::GET, &t.url("/keys"), b["access_token"].as_str(), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);

    for header in [None, Some("wrong")] {
        let mut req = t.http.get(t.emu.identity_endpoint()).query(&query);
        if let Some(h) = header {
            req = req.header("X-IDENTITY-HEADER", h);
        }
        assert_eq!(
            req.send().await.expect("answer").status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let unknown = t
        .http
        .get(t.emu.identity_endpoint())
        .query(&[
            ("api-version", "2019-08-01"),
            ("resource", "https://vault.azure.net"),
            ("principal_id", "nobody"),
        ])
        .header("X-IDENTITY-HEADER", t.emu.identity_header())
        .send()
        .await
        .expect("answer");
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert_eq!(t.emu.counters().get(Operation::AppServiceToken), 4);
}

#[tokio::test]
async fn tokens_from_another_emulator_are_foreign() {
    let a = TestVault::start().await;
    let b = TestVault::start().await;
    let r = a.send(Method::GET, &a.url("/keys"), Some(&b.token), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let garbage = a
        .send(Method::GET, &a.url("/keys"), Some("not-a-token"), None)
        .await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert_eq!(garbage.error_code(), "Unauthorized");
}
