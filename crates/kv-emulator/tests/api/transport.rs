//! HTTP and HTTPS listeners, the CA file, HTTP/2, and shutdown.

use crate::TestVault;
use kv_emulator::{Config, Emulator};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn https_uses_a_ca_written_to_disk_and_clients_without_it_are_refused() {
    let t = TestVault::start_tls().await;
    assert!(t.emu.url().starts_with("https://127.0.0.1:"));
    let path = t.emu.ca_pem_path().expect("CA path");
    let on_disk = std::fs::read_to_string(path).expect("CA file");
    assert_eq!(Some(on_disk.as_str()), t.emu.ca_pem());
    assert!(on_disk.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(t.call(Method::GET, "/keys", None).await.status, StatusCode::OK);

    let untrusting = reqwest::Client::new();
    assert!(untrusting.get(t.url("/keys")).send().await.is_err());
}

#[tokio::test]
async fn https_serves_localhost_and_http2() {
    let t = TestVault::start_tls().await;
    let localhost = t.url("/keys").replace("127.0.0.1", "localhost");
    let pem = t.emu.ca_pem().expect("pem");
    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).expect("pem"))
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let r = h2
        .get(&localhost)
        .bearer_auth(&t.token)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // kids follow the host the client used.
    let created = h2
        .post(t.url("/keys/k/create").replace("127.0.0.1", "localhost"))
        .bearer_auth(&t.token)
        .json(&serde_json::json!({"kty":"EC-HSM","crv":"P-256"}))
        .send()
        .await
        .expect("answer");
    let body: serde_json::Value = created.json().await.expect("json");
    assert!(body["key"]["kid"]
        .as_str()
        .is_some_and(|k| k.starts_with("https://localhost:")));
}

#[tokio::test]
async fn plain_http_serves_everything_on_one_listener() {
    let t = TestVault::start().await;
    assert!(t.emu.url().starts_with("http://127.0.0.1:"));
    assert_eq!(t.emu.imds_authority(), t.emu.url());
    assert!(t.emu.ca_pem().is_none() && t.emu.ca_pem_path().is_none());
    assert_eq!(t.call(Method::GET, "/keys", None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn ca_file_goes_where_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested").join("emulator-ca.pem");
    let emu = Emulator::start(Config {
        tls: true,
        ca_pem_path: Some(path.clone()),
        ..Config::default()
    })
    .await
    .expect("start");
    assert_eq!(emu.ca_pem_path(), Some(path.as_path()));
    assert!(path.exists());
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let emu = Emulator::start(Config::default()).await.expect("start");
    let addr = emu.addr();
    emu.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn binding_a_busy_port_is_a_typed_error() {
    let emu = Emulator::start(Config::default()).await.expect("start");
    let err = Emulator::start(Config {
        listen: emu.addr(),
        ..Config::default()
    })
    .await
    .expect_err("port in use");
    assert!(matches!(err, kv_emulator::StartError::Bind { .. }));
}
