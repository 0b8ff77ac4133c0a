//! The audit line: its fields, captured from the real server's log events as JSON.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tezos::{blake2b_256, BlsScheme, Curve, SecretKey};
use tzkms::auth::authenticated_bytes;
use tzkms::config::KeyPolicyConfig;

use crate::helpers::{vector_payload, TestSigner};

#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// Where this thread's log lines go, while a test captures them.
    static CAPTURE: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the current thread's capture, if any.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(captured) = c.borrow_mut().as_mut() {
                let _ = captured.write(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stops capturing when dropped.
pub(crate) struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

impl Captured {
    /// Captures this thread's JSON log lines (the test runtime is single-threaded, so the server's tasks
    /// log here too). One global subscriber serves every test: a thread-scoped one shares tracing's
    /// per-callsite interest cache with threads that have none, and could lose events to it.
    pub(crate) fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .with_max_level(tracing::Level::INFO)
                .with_writer(|| ThreadWriter)
                .finish();
            tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        });
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
        CaptureGuard
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// The `fields` of every audit line.
    pub(crate) fn audit_lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["target"] == "tzkms::audit")
            .map(|v| {
                assert!(v["timestamp"].is_string(), "{v}");
                v["fields"].clone()
            })
            .collect()
    }
}

#[tokio::test]
async fn each_request_leaves_one_audit_line_with_its_facts_and_no_secret() {
    let captured = Captured::default();
    let _guard = captured.install();
    let keys = [
        SecretKey::generate(Curve::P256),
        SecretKey::generate(Curve::Ed25519),
    ];
    let auth_key = SecretKey::generate(Curve::Ed25519);
    let baker = keys[0].public_key().hash();
    let operator = keys[1].public_key().hash();
    let auth_pk = auth_key.public_key().clone();
    let signer = TestSigner::start_with(&keys, |c| {
        c.auth.required = true;
        c.auth.authorized_keys = vec![auth_pk];
        c.policy.keys.insert(
            operator,
            KeyPolicyConfig {
                allow: vec!["reveal".parse().unwrap()],
                log_payloads: true,
                ..KeyPolicyConfig::default()
            },
        );
    })
    .await;
    let authenticate = |pkh, bytes: &[u8]| {
        let sig = auth_key
            .sign(&authenticated_bytes(&pkh, bytes), BlsScheme::default())
            .unwrap();
        format!("?authentication={sig}&version=3")
    };

    let attestation = vector_payload("tezt-attestation");
    let (status, _) = signer
        .sign(&baker, &authenticate(baker, &attestation), &attestation)
        .await;
    assert_eq!(status, 200);
    let (status, _) = signer
        .sign(&baker, &authenticate(baker, &attestation), &attestation)
        .await;
    assert_eq!(status, 200);
    let operation = vector_payload("sig-req-operation");
    let (status, _) = signer
        .sign(&operator, &authenticate(operator, &operation), &operation)
        .await;
    assert_eq!(status, 403);
    let (status, _) = signer.sign(&baker, "", &attestation).await;
    assert_eq!(status, 401);
    signer.stop().await;

    let lines = captured.audit_lines();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let signed = &lines[0];
    assert_eq!(signed["route"], "sign");
    assert!(
        signed["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{signed}"
    );
    assert_eq!(signed["auth_key"], auth_key.public_key().hash().to_string());
    assert_eq!(signed["pkh"], baker.to_string());
    assert_eq!(signed["kind"], "attestation");
    assert_eq!(signed["chain"], "NetXdQprcVkpaWU");
    assert!(signed["level"].is_u64() && signed["round"].is_u64(), "{signed}");
    assert_eq!(signed["decision"], "signed");
    assert_eq!(signed["rule"], "policy.default.allow");
    assert_eq!(signed["status"], 200);
    assert!(signed["latency_us"].is_u64());
    assert_eq!(signed["payload_blake2b"], hex::encode(blake2b_256(&attestation)));
    assert!(
        signed.get("payload").is_none(),
        "payload logged without log_payloads: {signed}"
    );

    assert_eq!(lines[1]["decision"], "replayed");

    let refused = &lines[2];
    assert_eq!(refused["decision"], "refused");
    assert_eq!(refused["status"], 403);
    assert_eq!(refused["kind"], "generic operation");
    assert_eq!(refused["rule"], format!("policy.keys.{operator}.allow"));
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("may not sign transaction"),
        "{refused}"
    );
    // log_payloads is set for this key: the payload is in its lines.
    assert_eq!(refused["payload"], hex::encode(&operation));

    let unauthenticated = &lines[3];
    assert_eq!(unauthenticated["status"], 401);
    assert_eq!(unauthenticated["rule"], "auth.required");
    assert!(unauthenticated.get("auth_key").is_none());

    // No secret ever reaches the log.
    let text = captured.text();
    for secret in keys.iter().chain([&auth_key]) {
        assert!(!text.contains(secret.to_b58().as_str()));
    }
}

#[tokio::test]
async fn signed_generic_operations_list_their_operation_kinds() {
    let captured = Captured::default();
    let _guard = captured.install();
    let keys = [SecretKey::generate(Curve::P256)];
    let signer = TestSigner::start_with(&keys, |c| {
        c.policy.default.allow = vec!["transaction".parse().unwrap()];
    })
    .await;
    let pkh = keys[0].public_key().hash();
    let (status, _) = signer.sign(&pkh, "", &vector_payload("sig-req-operation")).await;
    assert_eq!(status, 200);
    signer.stop().await;
    let lines = captured.audit_lines();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["operations"], "transaction");
    assert_eq!(lines[0]["kind"], "generic operation");
    assert_eq!(lines[0]["decision"], "signed");
}

#[tokio::test]
async fn every_read_leaves_one_audit_line_and_one_count() {
    let captured = Captured::default();
    let _guard = captured.install();
    let keys = [SecretKey::generate(Curve::P256)];
    let pkh = keys[0].public_key().hash();
    let signer = TestSigner::start_with(&keys, |_| {}).await;
    let unknown = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx";

    assert_eq!(signer.get(&format!("/keys/{pkh}")).await.0, 200);
    assert_eq!(signer.get(&format!("/keys/{unknown}")).await.0, 404);
    assert_eq!(signer.get("/keys/not-a-key").await.0, 400);
    assert_eq!(signer.get("/authorized_keys").await.0, 200);
    assert_eq!(
        signer.sign(&pkh, "", &vector_payload("tezt-attestation")).await.0,
        200
    );
    // Switched off by default: refused by the configuration.
    assert_eq!(signer.get("/known_keys").await.0, 403);
    let m = signer.metrics().await;
    signer.stop().await;

    let lines = captured.audit_lines();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    for line in &lines {
        assert!(
            line["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(line["latency_us"].is_u64(), "{line}");
    }
    let public_key = &lines[0];
    assert_eq!(public_key["route"], "public_key");
    assert_eq!(public_key["pkh"], pkh.to_string());
    assert_eq!(public_key["decision"], "served");
    assert_eq!(public_key["status"], 200);
    assert!(public_key.get("reason").is_none(), "{public_key}");

    let missing = &lines[1];
    assert_eq!(missing["route"], "public_key");
    assert_eq!(missing["pkh"], unknown);
    assert_eq!(missing["decision"], "refused");
    assert_eq!(missing["status"], 404);
    assert!(
        missing["reason"]
            .as_str()
            .unwrap()
            .contains("is not served by this signer"),
        "{missing}"
    );

    let malformed = &lines[2];
    assert_eq!(malformed["pkh"], "not-a-key");
    assert_eq!(malformed["decision"], "refused");
    assert_eq!(malformed["status"], 400);

    let authorized = &lines[3];
    assert_eq!(authorized["route"], "authorized_keys");
    assert!(authorized.get("pkh").is_none(), "{authorized}");
    assert_eq!(authorized["decision"], "served");
    assert_eq!(authorized["status"], 200);

    assert_eq!(lines[4]["route"], "sign");
    assert_eq!(lines[4]["decision"], "signed");

    let known_keys = &lines[5];
    assert_eq!(known_keys["route"], "known_keys");
    assert_eq!(known_keys["decision"], "refused");
    assert_eq!(known_keys["status"], 403);
    assert_eq!(known_keys["rule"], "server.allow_list_known_keys");

    // The same requests, counted once each; addresses this signer does not serve are "other".
    let count = |route: &str, key: &str, outcome: &str| {
        let series = format!(
            "tzkms_requests_total{{route=\"{route}\",kind=\"none\",key=\"{key}\",outcome=\"{outcome}\"}} "
        );
        m.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no series {series} in:\n{m}"))
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(count("public_key", &pkh.to_string(), "served"), 1);
    assert_eq!(count("public_key", "other", "not_found"), 1);
    assert_eq!(count("public_key", "other", "bad_request"), 1);
    assert_eq!(count("authorized_keys", "none", "served"), 1);
    assert_eq!(count("known_keys", "none", "refused_policy"), 1);
    assert!(!m.contains(unknown) && !m.contains("not-a-key"), "{m}");
    for (route, n) in [("public_key", 3), ("authorized_keys", 1), ("sign", 1)] {
        assert!(
            m.contains(&format!(
                "tzkms_request_duration_seconds_count{{route=\"{route}\"}} {n}\n"
            )),
            "{route}: {m}"
        );
    }
}
