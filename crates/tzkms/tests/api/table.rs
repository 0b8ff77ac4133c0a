//! The shared watermark in Azure Table Storage (Azurite): insert races, ETag conflicts, identical replays
//! across instances, refusals, an unreachable store, a wrong account key; and three real tzkms processes
//! sharing one table under a burst of conflicting requests, with one of them killed and restarted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tezos::{BlsScheme, ChainId, ConsensusKind, Curve, Level, Round, SecretKey, Signature};
use tzkms::config::{Config, TableConfig};
use tzkms::watermark::azure_table::TableStore;
use tzkms::watermark::{Begin, MarkKey, MarkRequest, WatermarkError, WatermarkStore};

use crate::azurite::{Azurite, KEY};
use crate::helpers::{assert_octez_error, TestSigner};
use crate::process::Server;

static TABLES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn table_config(azurite: &Azurite, dir: &Path) -> TableConfig {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("storage-key");
    std::fs::write(&key, KEY).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    TableConfig {
        endpoint: azurite.endpoint.clone(),
        table: format!("tzkms{}", TABLES.fetch_add(1, Ordering::SeqCst)),
        account: None,
        account_key_file: Some(key),
        credential: None,
        budget_ms: 2000,
        ca_file: None,
    }
}

async fn store(table: &TableConfig) -> TableStore {
    tzkms::startup::table_store(&Config::default(), table)
        .await
        .unwrap()
}

fn key() -> MarkKey {
    MarkKey {
        chain: ChainId([0x7a, 0x06, 0xa7, 0x70]),
        pkh: "tz3ZxowXGSjiVq227GQcwKdz87rKhq62rY4t".parse().unwrap(),
        kind: ConsensusKind::Preattestation,
    }
}

fn req(level: u32, round: u32, hash: u8) -> MarkRequest {
    MarkRequest {
        level: Level(level),
        round: Round(round),
        hash: [hash; 32],
    }
}

/// Begin and finish with a fake signature standing for the backend's.
async fn sign(s: &TableStore, r: MarkRequest) -> Result<Signature, WatermarkError> {
    match s.begin(key(), r).await? {
        Begin::Replay(sig) => Ok(sig),
        Begin::Sign(ticket) => {
            let sig = Signature::Generic([r.hash[0]; 64]);
            s.finish(ticket, sig).await?;
            Ok(sig)
        }
    }
}

#[tokio::test]
async fn instances_share_marks_through_conditional_writes() {
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = table_config(&azurite, dir.path());
    let a = store(&table).await;
    let b = store(&table).await;

    // Insert race: both try to create the entity with different payloads; exactly one wins.
    let (ra, rb) = tokio::join!(sign(&a, req(10, 0, 1)), sign(&b, req(10, 0, 2)));
    assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
    let winner = if ra.is_ok() { 1 } else { 2 };
    // Identical replays on either instance get the stored signature.
    assert_eq!(
        sign(&a, req(10, 0, winner)).await.unwrap(),
        Signature::Generic([winner; 64])
    );
    assert_eq!(
        sign(&b, req(10, 0, winner)).await.unwrap(),
        Signature::Generic([winner; 64])
    );
    // Different bytes at the mark, and anything lower, are refused everywhere.
    let loser = 3 - winner;
    assert!(matches!(
        sign(&a, req(10, 0, loser)).await,
        Err(WatermarkError::Refused { .. })
    ));
    assert!(matches!(
        sign(&b, req(9, 5, winner)).await,
        Err(WatermarkError::Refused { .. })
    ));

    // ETag conflict: b advances the mark; a's cached ETag is stale, its write gets 412, it re-reads
    // and refuses what is now below the mark.
    sign(&b, req(12, 0, 7)).await.unwrap();
    let err = sign(&a, req(11, 0, 8)).await.unwrap_err().to_string();
    assert!(
        err.contains("not above the high watermark (level 12 round 0)"),
        "{err}"
    );
    sign(&a, req(12, 1, 9)).await.unwrap();
    assert_eq!(b.all().await.unwrap()[&key()].round, Round(1));
}

#[tokio::test]
async fn concurrent_conflicting_requests_across_instances_yield_one_signature() {
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = table_config(&azurite, dir.path());
    let stores: Vec<Arc<TableStore>> = futures_join(&table, 3).await;
    for level in 1..=5u32 {
        let mut tasks = Vec::new();
        for i in 0..24u8 {
            let s = stores[usize::from(i) % 3].clone();
            tasks.push(tokio::spawn(async move {
                (i % 6, sign(&s, req(level, 0, i % 6)).await)
            }));
        }
        let mut signed = HashMap::new();
        for t in tasks {
            let (payload, result) = t.await.unwrap();
            match result {
                Ok(sig) => {
                    if let Some(previous) = signed.insert(payload, sig) {
                        assert_eq!(previous, sig);
                    }
                }
                Err(WatermarkError::Refused { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(signed.len(), 1, "level {level}: {signed:?}");
    }
}

async fn futures_join(table: &TableConfig, n: usize) -> Vec<Arc<TableStore>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(store(table).await));
    }
    out
}

#[tokio::test]
async fn an_unreachable_table_or_a_wrong_key_refuses_to_sign() {
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = table_config(&azurite, dir.path());
    let sk = SecretKey::generate(Curve::P256);
    let pkh = sk.public_key().hash();
    let signer = TestSigner::start_with(&[sk], |c| {
        c.watermark.table = Some(table.clone());
        crate::helpers::allow_generic_unchecked(c);
    })
    .await;
    let mut payload = vec![0x12, 0x7a, 0x06, 0xa7, 0x70];
    payload.extend_from_slice(&[1; 32]);
    payload.push(20);
    payload.extend_from_slice(&[0, 0, 0, 0, 0, 5, 0, 0, 0, 0]);
    payload.extend_from_slice(&[2; 32]);
    let (status, _) = signer.sign(&pkh, "", &payload).await;
    assert_eq!(status, 200);
    // The table goes away: consensus requests are refused, generic ones (no watermark) still sign.
    azurite.stop().await;
    payload[45] = 6;
    let (status, body) = signer.sign(&pkh, "", &payload).await;
    assert_eq!(status, 500);
    assert_octez_error(&body, "table storage");
    assert_octez_error(&body, "nothing was signed");
    assert_eq!(signer.sign(&pkh, "", b"\x03\x01").await.0, 200);
    signer.stop().await;

    // A wrong account key: startup fails with the table's answer.
    let azurite = Azurite::start().await;
    let mut wrong = table_config(&azurite, dir.path());
    std::fs::write(wrong.account_key_file.as_ref().unwrap(), "d3Jvbmcga2V5").unwrap();
    wrong.budget_ms = 500;
    let err = tzkms::startup::table_store(&Config::default(), &wrong)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("HTTP 403"), "{err:#}");
}

/// A consensus payload of `magic` at (level, round) whose hash depends on `variant`.
fn consensus(magic: u8, level: u32, round: u32, variant: u8) -> Vec<u8> {
    let mut p = vec![magic, 0x7a, 0x06, 0xa7, 0x70];
    p.extend_from_slice(&[0x42; 32]);
    p.push(if magic == 0x12 { 20 } else { 21 });
    p.extend_from_slice(&3u16.to_be_bytes());
    p.extend_from_slice(&level.to_be_bytes());
    p.extend_from_slice(&round.to_be_bytes());
    p.extend_from_slice(&[variant; 32]);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_sharing_a_table_sign_each_position_once() {
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = table_config(&azurite, dir.path());
    let config = dir.path().join("tzkms.toml");
    std::fs::write(
        &config,
        format!(
            "[keys]\ngenerate_if_empty = false\n\n[watermark.table]\nendpoint = \"{}\"\ntable = \"{}\"\naccount_key_file = \"{}\"\n",
            table.endpoint,
            table.table,
            table.account_key_file.as_ref().unwrap().display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let keys = [
        SecretKey::generate(Curve::P256),
        SecretKey::generate(Curve::Secp256k1),
    ];
    let mut data_dirs = Vec::new();
    for i in 0..3 {
        let d = dir.path().join(format!("instance-{i}"));
        for k in &keys {
            tzkms::startup::write_new_key(&d, &k.public_key().hash().to_string(), k).unwrap();
        }
        data_dirs.push(d);
    }
    let mut servers = Vec::new();
    for d in &data_dirs {
        servers.push(Some(Server::start(d, &["--config", &config]).await.unwrap()));
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    // (key, kind, level, round) -> (payload, signature) of the one signed payload.
    let mut signed: HashMap<(usize, u8, u32), (Vec<u8>, String)> = HashMap::new();
    for round_of_test in 0..2u32 {
        for level in (round_of_test * 10 + 1)..=(round_of_test * 10 + 4) {
            let addrs: Vec<_> = servers.iter().map(|s| s.as_ref().map(|s| s.addr)).collect();
            let mut tasks = Vec::new();
            for (ki, k) in keys.iter().enumerate() {
                for magic in [0x12u8, 0x13] {
                    for i in 0..12u8 {
                        let Some(addr) = addrs[usize::from(i) % 3] else {
                            continue;
                        };
                        let url = format!("http://{addr}/keys/{}", k.public_key().hash());
                        let payload = consensus(magic, level, 0, i % 4);
                        let client = client.clone();
                        tasks.push(tokio::spawn(async move {
                            let r = client
                                .post(url)
                                .body(format!("\"{}\"", hex::encode(&payload)))
                                .send()
                                .await;
                            let answer = match r {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                                    Some((status, body))
                                }
                                Err(_) => None, // the killed instance
                            };
                            (ki, magic, payload, answer)
                        }));
                    }
                }
            }
            // In the second part, kill one instance in the middle of the first burst.
            if round_of_test == 1 && level == 11 {
                tokio::task::yield_now().await;
                servers[1].take().unwrap().kill9().await;
            }
            for t in tasks {
                let (ki, magic, payload, answer) = t.await.unwrap();
                let Some((status, body)) = answer else { continue };
                match status {
                    200 => {
                        let sig_text = body["signature"].as_str().unwrap().to_owned();
                        let sig: Signature = sig_text.parse().unwrap();
                        assert!(keys[ki].public_key().verify(&payload, &sig, BlsScheme::default()));
                        let entry = signed
                            .entry((ki, magic, level))
                            .or_insert((payload.clone(), sig_text.clone()));
                        assert_eq!(
                            entry.0, payload,
                            "DOUBLE SIGNATURE across instances at level {level}"
                        );
                        assert_eq!(entry.1, sig_text, "an identical replay got another signature");
                    }
                    409 => {}
                    other => panic!("status {other}: {body}"),
                }
            }
        }
        if round_of_test == 1 {
            // The killed instance comes back; it must refuse what the others signed meanwhile.
            servers[1] = Some(
                Server::start(&data_dirs[1], &["--config", &config])
                    .await
                    .unwrap(),
            );
            let addr = servers[1].as_ref().unwrap().addr;
            for ((ki, magic, level), (payload, sig)) in &signed {
                let url = format!("http://{addr}/keys/{}", keys[*ki].public_key().hash());
                let r = client
                    .post(&url)
                    .body(format!("\"{}\"", hex::encode(payload)))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap();
                if status == 200 {
                    assert_eq!(
                        body["signature"].as_str().unwrap(),
                        sig,
                        "level {level} {magic:#x}"
                    );
                } else {
                    assert_eq!(status, 409, "{body}");
                }
                let other = consensus(*magic, *level, 0, 9);
                let r = client
                    .post(&url)
                    .body(format!("\"{}\"", hex::encode(&other)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    r.status().as_u16(),
                    409,
                    "a different payload was signed at level {level}"
                );
            }
        }
    }
    // Every position got its one signed payload, except possibly at level 11: a request the killed instance
    // had already reserved in the table died with it, and the others rightly refuse that position.
    let missing: Vec<(usize, u8, u32)> = (0..2usize)
        .flat_map(|ki| [0x12u8, 0x13].map(move |magic| (ki, magic)))
        .flat_map(|(ki, magic)| [1, 2, 3, 4, 11, 12, 13, 14].map(move |level| (ki, magic, level)))
        .filter(|position| !signed.contains_key(position))
        .collect();
    assert!(
        missing.iter().all(|&(_, _, level)| level == 11),
        "positions never signed: {missing:?}"
    );
    for s in servers.into_iter().flatten() {
        s.terminate().await;
    }
}

#[tokio::test]
async fn watermark_commands_work_against_the_table() {
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = table_config(&azurite, dir.path());
    let config = dir.path().join("tzkms.toml");
    std::fs::write(
        &config,
        format!(
            "[watermark.table]\nendpoint = \"{}\"\ntable = \"{}\"\naccount_key_file = \"{}\"\n",
            table.endpoint,
            table.table,
            table.account_key_file.as_ref().unwrap().display()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let data = dir.path().join("data");
    let pkh = "tz1KqTpEZ7Yob7QbPE4Hy4Wo8fHG8LhKxZSx";
    let set = |level: &'static str| {
        [
            "--config",
            c,
            "watermark",
            "set",
            "--store",
            "table",
            "--pkh",
            pkh,
            "--chain",
            "NetXdQprcVkpaWU",
            "--kind",
            "attestation",
            "--level",
            level,
        ]
    };
    let (ok, out, err) = crate::process::run(&set("50"), &data).await;
    assert!(ok, "{err}");
    assert!(out.contains("1 of 1 marks raised in the shared table"), "{out}");
    let (ok, out, _) = crate::process::run(&set("40"), &data).await;
    assert!(ok);
    assert!(out.contains("0 of 1 marks raised"), "{out}");
    let (ok, out, err) = crate::process::run(
        &["--config", c, "watermark", "show", "--store", "table", "--json"],
        &data,
    )
    .await;
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["marks"][0]["level"], 50);
    assert_eq!(doc["marks"][0]["kind"], "attestation");
    // An export of the table imports into a local store.
    let export = dir.path().join("export.json");
    let (ok, _, err) = crate::process::run(
        &[
            "--config",
            c,
            "watermark",
            "export",
            "--store",
            "table",
            "--out",
            export.to_str().unwrap(),
        ],
        &data,
    )
    .await;
    assert!(ok, "{err}");
    let (ok, out, err) = crate::process::run(&["watermark", "import", export.to_str().unwrap()], &data).await;
    assert!(ok && out.contains("1 of 1 marks raised"), "{out}{err}");
    // The shared table also refuses a signing request below the mark set by hand.
    let store = store(&table).await;
    let below = MarkRequest {
        level: Level(49),
        round: Round(0),
        hash: [1; 32],
    };
    let key = MarkKey {
        chain: "NetXdQprcVkpaWU".parse().unwrap(),
        pkh: pkh.parse().unwrap(),
        kind: ConsensusKind::Attestation,
    };
    assert!(matches!(
        store.begin(key, below).await,
        Err(WatermarkError::Refused { .. })
    ));
}

#[tokio::test]
async fn a_credential_that_stops_working_mid_run_refuses_to_sign() {
    use tzkms::azure::table::{TableAuth, TableClient};
    let azurite = Azurite::start().await;
    let dir = tempfile::tempdir().unwrap();
    let table = table_config(&azurite, dir.path());
    // A store that works, and the same table seen through a key that was rotated away (an expired
    // credential): it cannot read or reserve, so nothing may be signed.
    let good = store(&table).await;
    sign(&good, req(10, 0, 1)).await.unwrap();
    let rotated = TableClient::new(
        reqwest::Client::new(),
        &table.endpoint,
        &table.table,
        TableAuth::SharedKey {
            account: table.account_name(),
            key: tzkms::secret::Secret::new(b"rotated away".to_vec()),
        },
    )
    .unwrap();
    let stale = TableStore::new(
        Arc::new(rotated),
        std::time::Duration::from_millis(500),
        "test".into(),
    );
    let err = match stale.begin(key(), req(11, 0, 2)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a rotated key reserved a position"),
    };
    assert!(
        err.contains("HTTP 403") && err.contains("nothing was signed"),
        "{err}"
    );
    // The table still holds the mark the working store wrote, untouched.
    assert_eq!(good.all().await.unwrap()[&key()].level, Level(10));
}
