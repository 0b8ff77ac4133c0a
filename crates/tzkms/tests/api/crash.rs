//! Crash safety: the real binary is killed with SIGKILL in the middle of bursts of conflicting consensus
//! requests and restarted, many times. Across all runs, no (key, kind, level, round) may be answered for
//! two different payloads, and no request may be answered below a mark already answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tezos::{BlsScheme, Curve, PublicKey, SecretKey, Signature};

use crate::process::Server;

#[derive(Debug, Clone)]
struct Answer {
    key: usize,
    kind: u8,
    level: u32,
    round: u32,
    payload: Vec<u8>,
    signature: String,
    sent: Instant,
    received: Instant,
}

/// A Tenderbake consensus payload of `magic` (0x11 block, 0x12, 0x13) at (level, round); `variant`
/// changes the payload hash.
fn payload(magic: u8, level: u32, round: u32, variant: u8) -> Vec<u8> {
    if magic == 0x11 {
        let mut b = crate::helpers::vector_payload("sig-req-block");
        b[5..9].copy_from_slice(&level.to_be_bytes());
        b[96..100].copy_from_slice(&level.to_be_bytes());
        b[116..120].copy_from_slice(&round.to_be_bytes());
        b[130] = variant;
        return b;
    }
    crate::payloads::consensus(magic, level, round, variant)
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_bursts_never_yields_a_double_signature() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        SecretKey::generate(Curve::P256),
        SecretKey::generate(Curve::Secp256k1),
        SecretKey::generate(Curve::Ed25519),
    ];
    let keys: Vec<(String, PublicKey)> = secrets
        .iter()
        .map(|sk| (sk.public_key().hash().to_string(), sk.public_key().clone()))
        .collect();
    for sk in &secrets {
        tzkms::startup::write_new_key(dir.path(), &sk.public_key().hash().to_string(), sk).unwrap();
    }
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap();
    let mut rng = Lcg(0x5eed);
    let runs = 12;
    let mut killed_mid_burst = 0;
    for run in 0..runs {
        let server = Server::start(dir.path(), &[])
            .await
            .expect("server starts after a crash");
        let url = format!("http://{}", server.addr);
        // Levels overlap the previous run's so earlier payloads come back below or at the marks.
        let base = run * 2;
        let mut requests = Vec::new();
        for key in 0..keys.len() {
            for magic in [0x11u8, 0x12, 0x13] {
                for level in base..base + 4 {
                    for round in 0..2 {
                        for variant in 0..2 {
                            requests.push((key, magic, level, round, variant));
                        }
                    }
                }
            }
        }
        for i in (1..requests.len()).rev() {
            let j = (rng.next() as usize) % (i + 1);
            requests.swap(i, j);
        }
        let total = requests.len();
        let kill_after = 5 + (rng.next() as usize) % (total / 2);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = Vec::new();
        for (key, magic, level, round, variant) in requests {
            let client = client.clone();
            let url = format!("{url}/keys/{}", keys[key].0);
            let answers = answers.clone();
            let done_tx = done_tx.clone();
            let semaphore = semaphore.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = semaphore.acquire_owned().await.unwrap();
                let body = payload(magic, level, round, variant);
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .body(format!("\"{}\"", hex::encode(&body)))
                    .send()
                    .await;
                let received = Instant::now();
                if let Ok(r) = response {
                    let status = r.status().as_u16();
                    if let Ok(json) = r.json::<serde_json::Value>().await {
                        if status == 200 {
                            answers.lock().unwrap().push(Answer {
                                key,
                                kind: magic,
                                level,
                                round,
                                payload: body,
                                signature: json["signature"].as_str().unwrap().to_owned(),
                                sent,
                                received,
                            });
                        } else {
                            assert_eq!(status, 409, "{json}");
                        }
                    }
                }
                let _ = done_tx.send(());
            }));
        }
        drop(done_tx);
        let mut completed = 0;
        while completed < kill_after && done_rx.recv().await.is_some() {
            completed += 1;
        }
        if completed < total {
            killed_mid_burst += 1;
        }
        server.kill9().await;
        for t in tasks {
            t.await.unwrap();
        }
    }
    assert!(
        killed_mid_burst >= runs / 2,
        "only {killed_mid_burst} runs were killed mid-burst"
    );

    // A last run, not killed: every answered payload again.
    let server = Server::start(dir.path(), &[]).await.unwrap();
    let earlier = answers.lock().unwrap().clone();
    let mut replays = 0;
    for a in &earlier {
        let r = client
            .post(format!("http://{}/keys/{}", server.addr, keys[a.key].0))
            .body(format!("\"{}\"", hex::encode(&a.payload)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let json: serde_json::Value = r.json().await.unwrap();
        if status == 200 {
            assert_eq!(
                json["signature"], a.signature,
                "a replay got a different signature"
            );
            replays += 1;
        } else {
            assert_eq!(status, 409, "{json}");
        }
    }
    assert!(replays > 0, "no identical replay was answered");
    server.terminate().await;

    let answers = answers.lock().unwrap();
    assert!(answers.len() > 50, "only {} answers", answers.len());
    let mut by_position: HashMap<(usize, u8, u32, u32), &Answer> = HashMap::new();
    for a in answers.iter() {
        let sig: Signature = a.signature.parse().unwrap();
        assert!(keys[a.key].1.verify(&a.payload, &sig, BlsScheme::default()));
        if let Some(first) = by_position.insert((a.key, a.kind, a.level, a.round), a) {
            assert_eq!(
                first.payload, a.payload,
                "DOUBLE SIGNATURE: key {} kind {:#x} level {} round {}",
                a.key, a.kind, a.level, a.round
            );
            assert_eq!(first.signature, a.signature);
        }
    }
    for x in answers.iter() {
        for y in answers.iter() {
            if x.key == y.key && x.kind == y.kind && x.received < y.sent {
                assert!(
                    (y.level, y.round) >= (x.level, x.round),
                    "answered below a mark already answered: key {} kind {:#x}: ({}, {}) after ({}, {})",
                    y.key,
                    y.kind,
                    y.level,
                    y.round,
                    x.level,
                    x.round
                );
            }
        }
    }
}
