//! Hostile clients: oversized and slow request heads, idle and excess connections, random bytes, deeply
//! nested JSON, request floods over the per-client and per-key rates, and a flood of generic requests at a
//! throttled Key Vault while consensus requests keep being signed. The server stays up, signs nothing it
//! should not, and keeps memory bounded.

use std::time::Duration;

use tezos::builder::ConsensusPayload;
use tezos::{BlsScheme, Curve, SecretKey, Signature};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{assert_octez_error, preattestation, TestSigner};

/// Upper bound for the server to react; a failure bound, not a synchronisation delay.
const BOUND: Duration = Duration::from_secs(20);

/// Reads until the peer closes; returns what arrived, or None if it did not close within BOUND.
async fn read_to_close(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| out)
}

async fn still_serves(signer: &TestSigner) {
    let (status, _) = signer.get("/authorized_keys").await;
    assert_eq!(status, 200, "the server stopped serving");
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let signer = TestSigner::start().await;
    let mut s = TcpStream::connect(signer.addr).await.unwrap();
    let head = format!(
        "GET /authorized_keys HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let _ = s.write_all(head.as_bytes()).await;
    let answer = String::from_utf8_lossy(&read_to_close(&mut s).await.expect("closed")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    still_serves(&signer).await;
    let metrics = signer.metrics().await;
    assert!(metrics.contains("tzkms_connection_errors_total 1"), "{metrics}");
    signer.stop().await;
}

#[tokio::test]
async fn slow_request_heads_and_idle_connections_are_closed() {
    let signer = TestSigner::start_with(&[SecretKey::generate(Curve::P256)], |c| {
        c.server.header_read_timeout_ms = 300;
        c.server.idle_timeout_ms = 400;
    })
    .await;
    // Slowloris: half a request head, then silence.
    let mut slow = TcpStream::connect(signer.addr).await.unwrap();
    slow.write_all(b"POST /keys/tz1 HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    assert!(
        read_to_close(&mut slow).await.is_some(),
        "a slow request head kept its connection"
    );
    // Keep-alive connection that goes quiet after one request.
    let mut idle = TcpStream::connect(signer.addr).await.unwrap();
    idle.write_all(b"GET /authorized_keys HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut idle)
        .await
        .expect("an idle connection stayed open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    // A silent connection that never sends anything.
    let mut silent = TcpStream::connect(signer.addr).await.unwrap();
    assert!(
        read_to_close(&mut silent).await.is_some(),
        "a silent connection stayed open"
    );
    still_serves(&signer).await;
    let metrics = signer.metrics().await;
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    // The slow head (hyper's header timeout) and the idle and silent connections (the idle check) are
    // all counted, under one name or the other.
    let closed = counter("tzkms_connections_timed_out_total ") + counter("tzkms_connection_errors_total ");
    assert!(closed >= 3, "{metrics}");
    signer.stop().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_refused_with_503() {
    let signer = TestSigner::start_with(&[SecretKey::generate(Curve::P256)], |c| {
        c.server.max_connections = 4
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(signer.addr).await.unwrap();
        // A complete request on each, so every slot is surely taken before the fifth connection.
        s.write_all(b"GET /authorized_keys HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut fifth = TcpStream::connect(signer.addr).await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut fifth).await.expect("closed")).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many connections"), "{answer}");
    assert!(signer
        .metrics()
        .await
        .contains("tzkms_connections_refused_total 1"));
    drop(held);
    // Slots come back as connections close.
    let mut ok = false;
    for _ in 0..200 {
        if signer
            .client
            .get(signer.url("/authorized_keys"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "slots were not released");
    signer.stop().await;
}

#[tokio::test]
async fn random_bytes_and_hostile_json_get_4xx_and_change_nothing() {
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let signer = TestSigner::start_with(&[sk], |c| c.limits.per_client = None).await;
    // Random byte streams, deterministic so a failure can be replayed.
    let mut seed = 0x1234_5678_9abc_def0u64;
    for _ in 0..50 {
        let mut s = TcpStream::connect(signer.addr).await.unwrap();
        let bytes: Vec<u8> = (0..2048)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect();
        let _ = s.write_all(&bytes).await;
        let answer = read_to_close(&mut s)
            .await
            .expect("random bytes kept a connection open");
        if !answer.is_empty() {
            assert!(
                answer.starts_with(b"HTTP/1.1 4"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    // Deeply nested and huge JSON bodies.
    let nested = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let (status, body) = signer.post_raw(&pkh.to_string(), "", nested).await;
    assert_eq!(status, 413, "{body}");
    let nested = format!("{}\"03\"{}", "[".repeat(3_000), "]".repeat(3_000));
    let (status, body) = signer.post_raw(&pkh.to_string(), "", nested).await;
    assert_eq!(status, 400);
    assert_octez_error(&body, "not a JSON string");
    // Nothing was signed: the watermark is untouched.
    assert!(signer.watermark_marks().await.is_empty());
    still_serves(&signer).await;
    signer.stop().await;
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let sk = SecretKey::generate(Curve::P256);
    let signer = TestSigner::start_with(&[sk], |c| {
        c.limits.per_client = Some(tzkms::limits::Rate {
            rate: 0.5,
            burst: 3.0,
        });
    })
    .await;
    for _ in 0..3 {
        assert_eq!(signer.get("/authorized_keys").await.0, 200);
    }
    let response = signer
        .client
        .get(signer.url("/authorized_keys"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert_octez_error(&response.json().await.unwrap(), "over its request rate");
    signer.stop().await;
}

#[tokio::test]
async fn generic_floods_are_limited_per_key_while_consensus_is_signed() {
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let pk = sk.public_key().clone();
    let signer = TestSigner::start_with(&[sk], |c| {
        c.limits.per_client = None;
        c.limits.generic_per_key = Some(tzkms::limits::Rate {
            rate: 1.0,
            burst: 5.0,
        });
        crate::helpers::allow_generic_unchecked(c);
    })
    .await;
    let mut limited = 0;
    for i in 0..40u32 {
        let (status, body) = signer.sign(&pkh, "", &[0x03, (i % 256) as u8, 0xaa]).await;
        match status {
            200 => {}
            429 => {
                limited += 1;
                assert_octez_error(&body, "generic signing requests");
            }
            other => panic!("{other}: {body}"),
        }
        // Consensus requests of the same key are never rate limited.
        let payload = preattestation(i + 1, 0, 1);
        let (status, body) = signer.sign(&pkh, "", &payload).await;
        assert_eq!(status, 200, "{body}");
        let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
        assert!(pk.verify(&payload, &sig, BlsScheme::default()));
    }
    assert!(
        limited >= 30,
        "only {limited} of 40 generic requests were limited"
    );
    signer.stop().await;
}

/// The baker's own address (or the proxy it shares) floods generic requests: the flood empties that
/// address's generic-signing bucket and is refused, while every attestation and the `GET /authorized_keys`
/// octez-client sends before it are answered.
#[tokio::test]
async fn a_generic_flood_from_the_bakers_address_never_rate_limits_its_attestations() {
    const ATTESTATIONS: u32 = 50;
    const FLOOD_PER_ATTESTATION: u32 = 4;
    const RATE: f64 = 2.0;
    const BURST: f64 = 60.0;
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let pk = sk.public_key().clone();
    let signer = TestSigner::start_with(&[sk], |c| {
        c.limits.per_client = Some(tzkms::limits::Rate {
            rate: RATE,
            burst: BURST,
        });
        c.limits.generic_per_key = None;
        crate::helpers::allow_generic_unchecked(c);
    })
    .await;
    let started = std::time::Instant::now();
    let (mut flood_ok, mut flood_limited) = (0u32, 0u32);
    let mut refusal = None;
    for level in 1..=ATTESTATIONS {
        for j in 0..FLOOD_PER_ATTESTATION {
            let (status, body) = signer.sign(&pkh, "", &[0x03, level as u8, j as u8, 0xaa]).await;
            match status {
                200 => flood_ok += 1,
                429 => {
                    flood_limited += 1;
                    refusal.get_or_insert(body);
                }
                other => panic!("flood request answered {other}: {body}"),
            }
        }
        let (status, body) = signer.get("/authorized_keys").await;
        assert_eq!(
            status, 200,
            "GET /authorized_keys before attestation {level}: {body}"
        );
        let payload = crate::helpers::attestation(level, 1);
        let (status, body) = signer.sign(&pkh, "", &payload).await;
        assert_eq!(
            status, 200,
            "attestation {level} refused during the flood: {body}"
        );
        let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
        assert!(pk.verify(&payload, &sig, BlsScheme::default()));
    }
    // At most the burst plus what the rate refilled meanwhile got through; the rest was refused.
    let refilled = (RATE * started.elapsed().as_secs_f64()).ceil() as u32;
    println!("generic flood: {flood_ok} signed, {flood_limited} refused (429); 50 of 50 attestations signed");
    assert!(flood_ok <= BURST as u32 + refilled, "{flood_ok} signed");
    assert_eq!(flood_ok + flood_limited, ATTESTATIONS * FLOOD_PER_ATTESTATION);
    assert_octez_error(
        &refusal.expect("the flood was never refused"),
        "over its request rate for generic signing requests",
    );
    let metrics = signer.metrics().await;
    assert!(
        metrics.contains(&format!(
            "tzkms_rate_limited_total{{limit=\"per_client\"}} {flood_limited}\n"
        )),
        "{metrics}"
    );
    signer.stop().await;
}

/// Resident memory of a process, from /proc (kB).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    tzkms::startup::write_new_key(&data, "k", &sk).unwrap();
    let config = dir.path().join("tzkms.toml");
    std::fs::write(
        &config,
        "[server]\nmax_connections = 2500\nidle_timeout_ms = 120000\n",
    )
    .unwrap();
    let server = crate::process::Server::start(&data, &["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    let pid = server.child.id().unwrap();
    let before = rss_kb(pid);
    let mut held = Vec::new();
    for _ in 0..2000 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        // Half a request head on each: the worst kind of idle connection.
        s.write_all(b"POST /keys/").await.unwrap();
        held.push(s);
    }
    // Every connection is accepted (the server answers on a fresh one, so it went through the backlog).
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{}/authorized_keys", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let during = rss_kb(pid);
    println!("tzkms RSS: {before} kB idle, {during} kB with 2000 open connections");
    assert!(during < 256 * 1024, "RSS {during} kB with 2000 idle connections");
    drop(held);
    assert!(server.terminate().await.success());
}

#[tokio::test]
async fn a_generic_flood_at_a_throttled_vault_leaves_consensus_signing_alone() {
    use kv_emulator::{Curve as EmuCurve, Operation};
    let emu = crate::azure::emulator().await;
    let info = emu.create_key("baker", EmuCurve::P256).unwrap();
    let (pkh, pk) = crate::azure::pkh_of(&info);
    emu.faults()
        .set_latency(Operation::Sign, Duration::from_millis(10), Duration::ZERO);
    // Key Vault throttles above 40 signatures per second (Azure: 2,000 per 10 s per vault).
    emu.faults().throttle_above_rate(
        Operation::Sign,
        40,
        Duration::from_secs(1),
        Some(Duration::from_secs(1)),
    );
    let dir = tempfile::tempdir().unwrap();
    let azure = crate::azure::azure_config(&emu, dir.path());
    let signer = std::sync::Arc::new(
        TestSigner::start_with(&[], |c| {
            c.azure = Some(azure);
            c.limits.per_client = None;
            c.limits.generic_per_key = Some(tzkms::limits::Rate {
                rate: 10.0,
                burst: 10.0,
            });
            crate::helpers::allow_generic_unchecked(c);
        })
        .await,
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for w in 0..16u8 {
        let (signer, stop) = (signer.clone(), stop.clone());
        flood.push(tokio::spawn(async move {
            let mut counts = std::collections::BTreeMap::<u16, u32>::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let (status, _) = signer
                    .sign(&pkh, "", &[0x03, w, (i % 256) as u8, (i / 256) as u8])
                    .await;
                *counts.entry(status).or_default() += 1;
            }
            counts
        }));
    }
    // The baker: two consensus signatures per level, while the flood goes on.
    let mut latencies = Vec::new();
    for level in 1..=30u32 {
        for tag in [20, 21] {
            let payload = ConsensusPayload::new(tag, level, 0).payload_hash([7; 32]).bytes();
            let t = std::time::Instant::now();
            let (status, body) = signer.sign(&pkh, "?version=3", &payload).await;
            latencies.push(t.elapsed());
            assert_eq!(status, 200, "consensus refused during the flood: {body}");
            let sig: Signature = body["signature"].as_str().unwrap().parse().unwrap();
            assert!(pk.verify(&payload, &sig, BlsScheme::default()));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = std::collections::BTreeMap::<u16, u32>::new();
    for f in flood {
        for (status, n) in f.await.unwrap() {
            *total.entry(status).or_default() += n;
        }
    }
    latencies.sort();
    println!(
        "generic flood statuses {total:?}; consensus p50 {:?} max {:?}",
        latencies[latencies.len() / 2],
        latencies.last().unwrap()
    );
    assert!(
        total.get(&429).copied().unwrap_or(0) > 0,
        "the flood was never limited: {total:?}"
    );
    match std::sync::Arc::try_unwrap(signer) {
        Ok(s) => s.stop().await,
        Err(_) => panic!("still shared"),
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_is_counted() {
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let signer = TestSigner::start_with(&[sk], |c| c.server.request_timeout_ms = 300).await;
    let mut s = TcpStream::connect(signer.addr).await.unwrap();
    let head = format!("POST /keys/{pkh} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n\"12");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(BOUND, s.read_exact(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 408");
    assert!(signer.metrics().await.contains("tzkms_request_timeouts_total 1"));
    still_serves(&signer).await;
    signer.stop().await;
}

/// Open file descriptors of a process, from /proc.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Sets a running process's soft open-file limit with util-linux's prlimit (the hard limit stays, so
/// the soft one can be raised again without privileges).
fn set_nofile(pid: u32, limit: usize) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(status.success(), "prlimit --pid {pid} --nofile={limit}");
}

/// Out of file descriptors, accept fails at once, again and again: the loop waits (10 ms doubling to 1 s),
/// logs once per wait with a count and the fix, and serves again as soon as descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    tzkms::startup::write_new_key(&data, &pkh.to_string(), &sk).unwrap();
    let server = crate::process::Server::start_env(&data, &[], &[("TZKMS_LOG", "info")])
        .await
        .unwrap();
    let pid = server.child.id().unwrap();
    // Room for two more descriptors: the third connection finds none.
    set_nofile(pid, open_fds(pid) + 2);
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let log_lines = |needle: &str| -> Vec<String> {
        std::fs::read_to_string(&server.log_path)
            .unwrap()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !log_lines("accept failed")
        .iter()
        .any(|l| l.contains("failures=5 "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no fifth accept failure logged: {:?}",
            log_lines("accept")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failures = log_lines("accept failed");
    // One line per wait, each with its count: a spinning loop would have logged thousands by now.
    let numbered: Vec<_> = failures
        .iter()
        .take(5)
        .map(|l| {
            l.split("retry_in_ms=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(numbered, ["10", "20", "40", "80", "160"], "{failures:#?}");
    assert!(
        failures[0].contains("LimitNOFILE"),
        "the warning names the fix: {}",
        failures[0]
    );
    assert!(
        failures.len() < 12,
        "{} accept warnings: {failures:#?}",
        failures.len()
    );

    // Descriptors come back: the waiting connections are accepted and a request is served.
    drop(held);
    set_nofile(pid, 1024);
    let (status, _) = {
        let client = reqwest::Client::new();
        let r = client
            .get(format!("http://{}/keys/{pkh}", server.addr))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 200);
    assert!(
        !log_lines("accepting connections again").is_empty(),
        "{}",
        std::fs::read_to_string(&server.log_path).unwrap()
    );
    assert!(server.terminate().await.success());
}
