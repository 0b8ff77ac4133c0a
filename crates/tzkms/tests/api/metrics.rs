//! `GET /metrics` after real traffic: every outcome counted with its labels, signatures per key, rate
//! limit refusals, latency histograms, keys per backend.

use tezos::{Curve, SecretKey};

use crate::helpers::{attestation, TestSigner};

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn every_outcome_is_counted_with_its_labels() {
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let signer = TestSigner::start_with(&[sk], |c| {
        c.limits.per_client = Some(tzkms::limits::Rate {
            rate: 0.001,
            burst: 3.0,
        });
    })
    .await;
    assert_eq!(signer.sign(&pkh, "", &attestation(5, 1)).await.0, 200); // signed
    assert_eq!(signer.sign(&pkh, "", &attestation(5, 1)).await.0, 200); // replayed
    assert_eq!(signer.sign(&pkh, "", &attestation(5, 2)).await.0, 409); // watermark
    assert_eq!(signer.sign(&pkh, "", b"\x03\x00").await.0, 403); // policy: consensus only
    assert_eq!(signer.sign(&pkh, "", b"\x12\x00").await.0, 400); // malformed
    assert_eq!(
        signer.get("/keys/tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx").await.0,
        404
    );
    assert_eq!(signer.get("/authorized_keys").await.0, 200);
    // The client's burst of 3 reads is now spent (its signing requests have buckets of their own): the
    // rest are rate limited.
    let mut limited = 0;
    for _ in 0..5 {
        if signer.get("/authorized_keys").await.0 == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 1);
    let m = signer.metrics().await;
    let route = |kind: &str, outcome: &str| {
        format!("tzkms_requests_total{{route=\"sign\",kind=\"{kind}\",key=\"{pkh}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(value(&m, &route("attestation", "signed")), 1);
    assert_eq!(value(&m, &route("attestation", "replayed")), 1);
    assert_eq!(value(&m, &route("attestation", "refused_watermark")), 1);
    assert_eq!(value(&m, &route("generic_operation", "refused_policy")), 1);
    assert_eq!(value(&m, &route("preattestation", "bad_request")), 1);
    // An address this signer does not serve is "other", never a series of its own.
    assert_eq!(
        value(
            &m,
            "tzkms_requests_total{route=\"public_key\",kind=\"none\",key=\"other\",outcome=\"not_found\"}"
        ),
        1
    );
    assert!(!m.contains("tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx"), "{m}");
    assert!(
        value(
            &m,
            "tzkms_requests_total{route=\"authorized_keys\",kind=\"none\",key=\"none\",outcome=\"served\"}"
        ) >= 1
    );
    // One backend call (the replay and the refusals never reach it), timed.
    assert_eq!(
        value(&m, "tzkms_backend_sign_total{backend=\"file\",result=\"ok\"}"),
        1
    );
    assert_eq!(
        value(&m, "tzkms_backend_sign_duration_seconds_count{backend=\"file\"}"),
        1
    );
    assert_eq!(
        value(
            &m,
            &format!("tzkms_watermark_level{{key=\"{pkh}\",kind=\"attestation\"}}")
        ),
        5
    );
    assert_eq!(
        value(
            &m,
            &format!("tzkms_watermark_round{{key=\"{pkh}\",kind=\"attestation\"}}")
        ),
        0
    );
    assert_eq!(value(&m, "tzkms_ready"), 1);
    assert_eq!(value(&m, "tzkms_health_check_ok{check=\"watermark:file\"}"), 1);
    // One rewrite for the signature, one for this scrape's readiness probe.
    assert_eq!(value(&m, "tzkms_watermark_file_writes_total{result=\"ok\"}"), 2);
    // Series alerts compute increases on exist from the start, at 0.
    assert_eq!(
        value(
            &m,
            &format!("tzkms_requests_total{{route=\"sign\",kind=\"block\",key=\"{pkh}\",outcome=\"error\"}}")
        ),
        0
    );
    assert!(m.contains("tzkms_build_info{version=\""), "{m}");
    // Every family has its HELP and TYPE once.
    for line in m.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert_eq!(m.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
        assert!(m.contains(&format!("# HELP {name} ")), "{name}");
    }
    assert_eq!(
        value(
            &m,
            &format!("tzkms_signatures_total{{key=\"{pkh}\",kind=\"attestation\"}}")
        ),
        2
    );
    assert!(value(&m, "tzkms_rate_limited_total{limit=\"per_client\"}") >= limited);
    assert_eq!(
        value(&m, "tzkms_request_duration_seconds_count{route=\"sign\"}"),
        5
    );
    assert_eq!(value(&m, "tzkms_keys{backend=\"file\"}"), 1);
    assert_eq!(value(&m, "tzkms_connections_refused_total"), 0);
    signer.stop().await;
}
