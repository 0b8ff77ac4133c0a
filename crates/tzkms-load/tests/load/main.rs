//! The load tool against the real tzkms server (started here on port 0, or by the tool itself), and against
//! small stubs for what tzkms cannot do on purpose: answer with a wrong signature, demand authentication.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::json;
use tezos::{BlsScheme, Curve, PublicKeyHash, SecretKey, Signature};
use tzkms::app::Application;
use tzkms::config::Config;
use tzkms_load::client::authentication_bytes;
use tzkms_load::limits::TrivialSigner;
use tzkms_load::run::{run, Options, Report};

/// A tzkms with one key per curve, served on 127.0.0.1:0 until the test ends.
async fn tzkms_with_every_curve() -> (SocketAddr, Vec<PublicKeyHash>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let mut pkhs = Vec::new();
    for curve in Curve::ALL {
        let key = SecretKey::generate(curve);
        let pkh = key.public_key().hash();
        tzkms::startup::write_new_key(dir.path(), &pkh.to_string(), &key).expect("key file");
        pkhs.push(pkh);
    }
    let mut config = Config {
        data_dir: Some(dir.path().to_owned()),
        ..Config::default()
    };
    config.server.listen = vec!["127.0.0.1:0".parse().expect("addr")];
    config.keys.generate_if_empty = false;
    let app = Application::build(&config).await.expect("application");
    let addr = app.local_addrs()[0];
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    (addr, pkhs, dir)
}

fn options(args: &[String]) -> Options {
    let mut all = vec!["tzkms-load".to_string()];
    all.extend(args.iter().cloned());
    Options::try_parse_from(all).expect("options")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn target_args(addr: SocketAddr, pkhs: &[PublicKeyHash]) -> Vec<String> {
    let mut a = args(&["--target", &format!("http://{addr}")]);
    for pkh in pkhs {
        a.push("--key".into());
        a.push(pkh.to_string());
    }
    a
}

fn errors(report: &Report) -> Vec<(String, u64)> {
    report.runs[0].load.errors.clone().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baker_mode_against_tzkms_signs_and_verifies_every_request() {
    let (addr, pkhs, _dir) = tzkms_with_every_curve().await;
    let mut a = target_args(addr, &pkhs);
    a.extend(args(&[
        "--delegates",
        "4",
        "--levels",
        "3",
        "--blocks",
        "--extra-round-every",
        "2",
        "--no-limits",
        "--start-level",
        "1000",
    ]));
    let report = run(&options(&a)).await.expect("run");
    // Levels 1000 and 1002 have one round, 1001 two: 4 rounds of one block plus 4 + 4 consensus requests.
    let run0 = &report.runs[0];
    assert_eq!((run0.load.requests, run0.load.ok), (36, 36));
    assert_eq!(errors(&report), vec![]);
    let bursts = run0.bursts.as_ref().expect("bursts");
    assert_eq!((bursts.bursts, bursts.size, bursts.bursts_with_errors), (8, 4, 0));
    let v = run0.verification.as_ref().expect("verified");
    assert_eq!((v.checked, v.bad), (36, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_by_status() {
    let (addr, pkhs, _dir) = tzkms_with_every_curve().await;
    let mut a = target_args(addr, &pkhs[2..3]);
    a.extend(args(&[
        "--delegates",
        "1",
        "--levels",
        "2",
        "--no-limits",
        "--connections",
        "reuse",
    ]));
    let mut first = a.clone();
    first.extend(args(&["--start-level", "500"]));
    assert_eq!(run(&options(&first)).await.expect("run").runs[0].load.ok, 4);
    // Below the watermark now: every request is refused with 409 and nothing is verified.
    a.extend(args(&["--start-level", "100"]));
    let report = run(&options(&a)).await.expect("run");
    assert_eq!(report.runs[0].load.ok, 0);
    assert_eq!(errors(&report), vec![("409".to_string(), 4)]);
    assert_eq!(report.runs[0].verification.as_ref().expect("v").checked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_against_a_tzkms_the_tool_starts_with_its_limits() {
    let a = args(&[
        "--mode",
        "max",
        "--payload",
        "attestation",
        "--concurrency",
        "3",
        "--requests",
        "30",
        "--curve",
        "p256",
        "--watermark",
        "on",
        "--limit-seconds",
        "0.05",
    ]);
    let report = run(&options(&a)).await.expect("run");
    let run0 = &report.runs[0];
    assert_eq!((run0.load.requests, run0.load.ok), (30, 30));
    assert_eq!(errors(&report), vec![]);
    assert_eq!(run0.verification.as_ref().expect("v").bad, 0);
    assert_eq!(run0.trivial.as_ref().expect("trivial").ok, 30);
    let limits = report.limits.as_ref().expect("limits");
    assert_eq!(limits.sign.len(), 1);
    assert_eq!(limits.fsync.as_ref().expect("fsync").samples, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_exactly_the_requested_number() {
    let a = args(&[
        "--mode",
        "rate",
        "--rate",
        "2000",
        "--requests",
        "25",
        "--delegates",
        "3",
        "--connections",
        "per-request",
        "--no-limits",
        "--curve",
        "ed25519",
    ]);
    let report = run(&options(&a)).await.expect("run");
    assert_eq!((report.runs[0].load.requests, report.runs[0].load.ok), (25, 25));
    assert_eq!(report.runs[0].verification.as_ref().expect("v").checked, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_answering_wrong_signatures_is_caught() {
    let key = SecretKey::generate(Curve::P256);
    let other = SecretKey::generate(Curve::P256);
    let wrong = other.sign(b"\x03anything", BlsScheme::default()).expect("sign");
    let stub = TrivialSigner::start(1, vec![key.public_key().clone()], wrong).expect("stub");
    let mut a = target_args(stub.addr, &[key.public_key().hash()]);
    a.extend(args(&["--delegates", "1", "--levels", "2", "--no-limits"]));
    let report = run(&options(&a)).await.expect("run");
    assert_eq!(report.runs[0].load.ok, 4);
    let v = report.runs[0].verification.as_ref().expect("v");
    assert_eq!((v.checked, v.bad), (4, 4));
    assert_eq!(report.bad_signatures(), 4);

    a.push("--no-verify".into());
    let report = run(&options(&a)).await.expect("run");
    assert!(report.runs[0].verification.is_none());
    assert!(report.verification.contains("OFF"));
}

/// A signer that lists one authorized key and signs only requests authenticated by it.
async fn authenticating_stub(
    signing: Arc<SecretKey>,
    authorized: PublicKeyHash,
    auth_pk: tezos::PublicKey,
) -> SocketAddr {
    let router = Router::new()
        .route(
            "/authorized_keys",
            get(move || async move { Json(json!({ "authorized_keys": [authorized.to_string()] })) }),
        )
        .route(
            "/keys/{pkh}",
            get({
                let pk = signing.public_key().to_string();
                move || async move { Json(json!({ "public_key": pk })) }
            })
            .post(
                move |Path(pkh): Path<String>, RawQuery(query): RawQuery, body: String| {
                    let signing = signing.clone();
                    let auth_pk = auth_pk.clone();
                    async move {
                        let pkh: PublicKeyHash = pkh.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
                        let hex_text: String =
                            serde_json::from_str(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
                        let payload = hex::decode(hex_text).map_err(|_| StatusCode::BAD_REQUEST)?;
                        let auth = query
                            .unwrap_or_default()
                            .split('&')
                            .find_map(|p| p.strip_prefix("authentication=").map(str::to_owned))
                            .ok_or(StatusCode::UNAUTHORIZED)?;
                        let auth: Signature = auth.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
                        if !auth_pk.verify(&authentication_bytes(&pkh, &payload), &auth, BlsScheme::default())
                        {
                            return Err(StatusCode::FORBIDDEN);
                        }
                        let signature = signing
                            .sign(&payload, BlsScheme::default())
                            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
                        Ok(Json(json!({ "signature": signature.to_string() })))
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_authenticated_when_the_signer_lists_authorized_keys() {
    let signing = Arc::new(SecretKey::generate(Curve::Secp256k1));
    let auth = SecretKey::generate(Curve::Ed25519);
    let addr = authenticating_stub(
        signing.clone(),
        auth.public_key().hash(),
        auth.public_key().clone(),
    )
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let auth_file = dir.path().join("auth.key");
    std::fs::write(&auth_file, format!("unencrypted:{}\n", auth.to_b58().as_str())).expect("write");
    let mut a = target_args(addr, &[signing.public_key().hash()]);
    a.extend(args(&["--delegates", "1", "--levels", "2", "--no-limits"]));

    let without = run(&options(&a)).await.expect("run");
    assert_eq!(without.runs[0].load.ok, 0);
    assert_eq!(errors(&without), vec![("failed (auth)".to_string(), 4)]);

    a.extend(args(&["--auth-key", auth_file.to_str().expect("utf-8")]));
    let with = run(&options(&a)).await.expect("run");
    assert!(with.authentication);
    assert_eq!(
        (with.runs[0].load.ok, with.errors(), with.bad_signatures()),
        (4, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tzkms_requiring_authentication_signs_for_the_authorized_key() {
    let auth = SecretKey::generate(Curve::P256);
    let dir = tempfile::tempdir().expect("dir");
    let auth_file = dir.path().join("auth.key");
    std::fs::write(&auth_file, auth.to_b58().as_str()).expect("write");
    let a = args(&[
        "--delegates",
        "3",
        "--levels",
        "2",
        "--no-limits",
        "--auth-key",
        auth_file.to_str().expect("utf-8"),
    ]);
    let report = run(&options(&a)).await.expect("run");
    assert!(report.signer.contains("authentication required"));
    assert_eq!(
        (report.runs[0].load.ok, report.errors(), report.bad_signatures()),
        (12, 0, 0)
    );
}
