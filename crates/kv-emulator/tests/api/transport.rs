//! HTTP and HTTPS listeners, the CA file, HTTP/2, and shutdown.

use crate::{imds_token_request, TestVault};
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
        ca_pem_path: Some(path.clone()),
        ..Config::tls()
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

#[tokio::test]
async fn binary_prints_its_endpoints_and_serves_them() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kv-emulator"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--identity-listen",
            "127.0.0.1:0",
            "--persist-dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kv-emulator");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut printed = std::collections::HashMap::new();
    while let Some(line) = lines.next_line().await.expect("read stdout") {
        let (k, v) = line.split_once('=').expect("name=value");
        printed.insert(k.to_owned(), v.to_owned());
        if k == "challenge" {
            break;
        }
    }
    for key in [
        "vault_url",
        "authority_host",
        "token_endpoint",
        "imds_endpoint",
        "identity_endpoint",
        "identity_header",
        "ca_file",
    ] {
        assert!(
            printed.get(key).is_some_and(|v| !v.is_empty()),
            "{key} missing: {printed:?}"
        );
    }
    let ca = std::fs::read(&printed["ca_file"]).expect("CA file");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("pem"))
        .build()
        .expect("client");
    let token: serde_json::Value = http
        .post(&printed["token_endpoint"])
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", printed["client_id"].as_str()),
            ("client_secret", "kv-emulator-client-secret"),
            ("scope", "https://vault.azure.net/.default"),
        ])
        .send()
        .await
        .expect("token answer")
        .json()
        .await
        .expect("json");
    let keys = http
        .get(format!("{}/keys?api-version=2025-07-01", printed["vault_url"]))
        .bearer_auth(token["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("keys answer");
    assert_eq!(keys.status(), StatusCode::OK);
    let imds = imds_token_request(&http, &printed["imds_endpoint"])
        .send()
        .await
        .expect("imds answer");
    assert_eq!(imds.status(), StatusCode::OK);
    child.start_kill().expect("kill");
    let _ = child.wait().await;
}

#[test]
fn binary_help_documents_running_beside_tzkms() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kv-emulator"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--http",
        "--identity-listen",
        "--ca-file",
        "--persist-dir",
        "--flavour",
        "--tenant-id",
        "--client-id",
        "--client-secret",
        "--token-lifetime",
        "--latency-ms",
        "tzkms",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}
